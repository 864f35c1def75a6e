#!/bin/sh
# Entrypoint of the compose broker: installs the TLS certificate and key (CERTS_DIR, bind
# mounted from deploy/certs) readable only by mosquitto, starts mosquitto, and runs a loop
# that installs the password file
# the API writes (AUTH_DIR/passwd: the backend's account and each device's hashed
# credentials, devices/broker.py PasswordFileSync) as RUN_DIR/passwd, readable only by
# mosquitto, and reloads mosquitto (SIGHUP) whenever it changes. A device registered or
# rotated through the API can connect within POLL_S seconds.
set -eu
CONF=${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}
AUTH_DIR=${AUTH_DIR:-/mosquitto/auth}
RUN_DIR=${RUN_DIR:-/mosquitto/run}
CERTS_DIR=${CERTS_DIR:-/mosquitto/certs}
POLL_S=${POLL_S:-2}
OWNER=${MOSQUITTO_USER:-mosquitto}

install_passwd() {
    tmp="$RUN_DIR/.passwd.tmp"
    cp "$AUTH_DIR/passwd" "$tmp"
    chmod 0600 "$tmp"
    chown "$OWNER" "$tmp" 2>/dev/null || true
    mv "$tmp" "$RUN_DIR/passwd"
}

mkdir -p "$RUN_DIR"
chown "$OWNER" "$RUN_DIR" 2>/dev/null || true
for f in server.crt server.key; do
    cp "$CERTS_DIR/$f" "$RUN_DIR/$f"
    chmod 0600 "$RUN_DIR/$f"
    chown "$OWNER" "$RUN_DIR/$f" 2>/dev/null || true
done
install_passwd
last=$(cksum < "$AUTH_DIR/passwd")
mosquitto -c "$CONF" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; exit 0' TERM INT
while kill -0 "$pid" 2>/dev/null; do
    sleep "$POLL_S" &
    wait $! || true
    now=$(cksum < "$AUTH_DIR/passwd" 2>/dev/null || echo "$last")
    if [ "$now" != "$last" ]; then
        install_passwd
        kill -HUP "$pid"
        last=$now
    fi
done
wait "$pid"
