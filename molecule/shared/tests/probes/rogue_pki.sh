# A CA of nobody's, and a client certificate it signed, made with openssl in DIR (argument).
set -e
d=$1; rm -rf "$d"; mkdir -p "$d"; cd "$d"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
  -out ca.crt -subj /CN=rogue-ca -days 2 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout client.key \
  -out client.csr -subj /CN="$(hostname)" 2>/dev/null
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt \
  -days 2 2>/dev/null
