#!/bin/sh
# A local certificate authority for a pilot, and a server certificate it signs.
#
#   scripts/make-local-ca.sh [-d DIR] NAME [NAME...]
#
# NAME: each DNS name or IP address the devices and browsers use to reach the server
# (e.g. monitoring.example.kz 10.0.0.5). Writes into DIR (default deploy/certs):
#   ca.key, ca.crt          the CA (10 years). Keep ca.key offline; install ca.crt on the
#                           devices (MQTT over TLS) and the officers' browsers.
#   server.key, server.crt  the server's key and certificate (825 days), for mosquitto's
#                           8883 listener and the API's HTTPS (compose.yaml, or
#                           `probation serve --tls-cert server.crt --tls-key server.key`).
# An existing CA in DIR is reused, so running it again only renews the server certificate.
# DIR is made 0700; server.key is 0644 inside it so the containers' users can read the
# bind-mounted file (nobody else on the host can reach it through DIR).
set -eu
dir=deploy/certs
if [ "${1:-}" = "-d" ]; then dir=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [-d DIR] NAME [NAME...]" >&2; exit 2; }
mkdir -p "$dir"
chmod 700 "$dir"
umask 077
if [ ! -f "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -subj "/CN=Probation monitoring local CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        2>/dev/null
fi
san=""
for n in "$@"; do
    case $n in
        *:*) entry="IP:$n" ;;           # IPv6
        *[!0-9.]*) entry="DNS:$n" ;;
        *) entry="IP:$n" ;;             # IPv4
    esac
    san="${san:+$san,}$entry"
done
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
ext=$(mktemp)
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' "$san" > "$ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$ext" -out "$dir/server.crt" 2>/dev/null
rm -f "$ext" "$dir/server.csr"
chmod 644 "$dir/ca.crt" "$dir/server.crt" "$dir/server.key"
echo "CA:     $dir/ca.crt (give it to devices and browsers; keep $dir/ca.key offline)"
echo "server: $dir/server.crt for $san"
