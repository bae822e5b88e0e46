#!/usr/bin/env bash
# Makes throw-away TLS material for the integration tests in DIR (inside the build tree; never
# committed): a test CA, a server certificate for 127.0.0.1/localhost signed by it, a client
# certificate signed by it (mutual TLS), and an unrelated CA (the "wrong CA" a client may trust).
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
openssl=${OPENSSL:-openssl}
mkdir -p "$dir"
cd "$dir"

make_ca() {  # name
  "$openssl" req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=cab-test-$1" \
    -keyout "$1.key" -out "$1.crt" 2>/dev/null
}

make_leaf() {  # name ca extfile-lines
  local name=$1 ca=$2 ext=$3
  "$openssl" req -newkey rsa:2048 -nodes -subj "/CN=cab-test-$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  printf '%b\n' "$ext" > "$name.ext"
  "$openssl" x509 -req -in "$name.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial -days 2 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
}

make_ca ca
make_ca other_ca
make_leaf server ca "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
make_leaf client ca "extendedKeyUsage=clientAuth"
echo "s3cret-test-token-$$" > token
chmod 600 ./*.key token
