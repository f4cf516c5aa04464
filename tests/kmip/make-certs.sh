#!/bin/sh
# A test CA, a server certificate for 127.0.0.1 and two client certificates
# (kmsfs and the key administrator), all EC P-256, in directory $1.
# PyKMIP's TLS1.2 suite offers ECDHE-ECDSA ciphers, hence EC keys; its
# client-auth check wants extendedKeyUsage clientAuth.
set -eu
cd "$1"
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj /CN=kmsfs-test-ca -days 3650 -out ca.pem 2>/dev/null
for who in server kmsfs admin; do
    openssl ecparam -name prime256v1 -genkey -noout -out "$who.ec" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$who.ec" -out "$who.key"
    openssl req -new -key "$who.key" -subj "/CN=$who" -out "$who.csr" 2>/dev/null
    if [ "$who" = server ]; then
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$who.ext"
    else
        printf 'extendedKeyUsage=clientAuth\n' > "$who.ext"
    fi
    openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 3650 -extfile "$who.ext" -out "$who.pem" 2>/dev/null
done
chmod 600 ./*.key ./*.ec
