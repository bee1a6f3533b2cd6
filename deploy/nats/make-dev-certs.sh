#!/bin/sh
# Development TLS certificates for the compose NATS server (never for production: use your
# own CA there). Writes into deploy/nats/certs/ (git-ignored):
#   ca.pem, ca-key.pem          a throwaway certificate authority (10 years)
#   server.pem, server-key.pem  the server certificate for `nats`, `localhost`, 127.0.0.1
#   ca-bundle.pem               the public CAs (certifi) plus ca.pem: clients point
#                               SSL_CERT_FILE at it, so they trust NATS and still reach W-API
# Run from the repository root:  sh deploy/nats/make-dev-certs.sh
set -eu
dir="$(dirname "$0")/certs"
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/CN=zapgate dev CA" \
    -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=nats" \
    -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:nats,DNS:nats-1,DNS:nats-2,DNS:nats-3,DNS:localhost,IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 825 \
    -extfile san.ext -out server.pem 2>/dev/null
rm -f server.csr san.ext ca.srl
bundle="$(python3 -c 'import certifi; print(certifi.where())' 2>/dev/null || true)"
if [ -n "$bundle" ]; then cat "$bundle" ca.pem > ca-bundle.pem; else cp ca.pem ca-bundle.pem; fi
chmod 600 ca-key.pem
# The server may run as another user than the one who made the key (dev only).
chmod 644 server-key.pem
echo "certificates in $dir"
