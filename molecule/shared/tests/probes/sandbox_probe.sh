# Run by a copy of a unit (same user, same sandbox, ExecStart replaced): try to write a file in
# each place given; print "PLACE written" or "PLACE <the shell's error>".
for p in "$@"; do
  f="$p/.sandbox-probe"
  if err=$( (echo x > "$f") 2>&1 ); then rm -f "$f"; echo "$p written"; else echo "$p $err"; fi
done
