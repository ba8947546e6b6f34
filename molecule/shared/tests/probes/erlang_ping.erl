io:format("ping=~p~n", [net_adm:ping(list_to_atom(hd(init:get_plain_arguments())))]), halt().
