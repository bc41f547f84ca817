#!/usr/bin/env bash
# The forwarders users would pick instead of Tether, on loopback, for `tether bench --peer`
# (README "Performance"): a private OpenSSH server on a high port with its own host key and an
# `ssh -L` forward over one SSH connection (AES-128-GCM), and a stunnel pair (one TLS 1.3
# connection per forwarded connection, TLS_AES_128_GCM_SHA256). Both lead to the bench's plain
# TCP sink, the one the relays' row leads to.
#
#   Benchmarks/peers.sh COMMAND [ARGS...]
#
# starts them, runs COMMAND ARGS --sink-port P --peer ssh-L=127.0.0.1:A --peer stunnel=127.0.0.1:B,
# and stops every process it started by its PID, on success, failure or interrupt.
# Needs Debian's openssh-server, openssh-client, stunnel4 and openssl.
set -euo pipefail

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]   (e.g. $0 .build/release/tether bench --only raw,relays,peers)" >&2
    exit 2
fi
for tool in /usr/sbin/sshd ssh ssh-keygen stunnel4 openssl python3; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is missing (apt-get install openssh-server stunnel4 openssl python3)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/tether-peers.XXXXXX)
pids=()
stop() {
    # Clients before servers: sshd's session process ends with its client. SIGTERM first; SIGKILL
    # for any still running after 3 s (a parent that blocks signals passes its mask on, and then
    # SIGTERM never arrives).
    for (( index=${#pids[@]}-1; index>=0; index-- )); do
        kill "${pids[index]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Four free loopback ports: the sink, sshd, the ssh forward, stunnel's TLS hop and its forward.
read -r sink ssh_port ssh_forward stunnel_tls stunnel_forward < <(python3 - <<'EOF'
import socket
sockets = [socket.socket() for _ in range(5)]
for s in sockets:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in sockets))
EOF
)

# Whether a socket listens on the port (read from /proc/net/tcp: connecting would make the
# forwarders reach for a sink that is not there yet).
listening() {
    local hex
    hex=$(printf ':%04X ' "$1")
    awk -v port="$hex" 'NR > 1 && $4 == "0A" && index($2 " ", port) { found = 1 } END { exit !found }' /proc/net/tcp
}

wait_for_listener() {  # PORT PID NAME
    for _ in $(seq 200); do
        listening "$1" && return 0
        kill -0 "$2" 2>/dev/null || { echo "$0: $3 exited; its log:" >&2; cat "$work/$3.log" >&2; exit 1; }
        sleep 0.05
    done
    echo "$0: $3 did not listen on 127.0.0.1:$1 within 10 s" >&2
    exit 1
}

# OpenSSH: a private server (own host key, own authorized key, nothing else from /etc/ssh).
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
cat > "$work/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $work/host_key
PidFile none
AuthorizedKeysFile $work/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
Ciphers aes128-gcm@openssh.com
Compression no
LogLevel ERROR
EOF
[ "$(id -u)" -ne 0 ] || mkdir -p /run/sshd  # its privilege-separation directory
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
pids+=($!)
wait_for_listener "$ssh_port" "${pids[-1]}" sshd

# One SSH connection; every connection to the forward is a channel on it.
ssh -N -F /dev/null -i "$work/client_key" -o IdentitiesOnly=yes -o BatchMode=yes \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o ExitOnForwardFailure=yes -o Ciphers=aes128-gcm@openssh.com -o Compression=no \
    -L "127.0.0.1:$ssh_forward:127.0.0.1:$sink" -p "$ssh_port" "$(id -un)@127.0.0.1" 2>"$work/ssh.log" &
pids+=($!)
wait_for_listener "$ssh_forward" "${pids[-1]}" ssh

# stunnel: a server in front of the sink and a client in front of it, TLS 1.3 only.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$work/stunnel.key" -out "$work/stunnel.pem" 2>/dev/null
cat > "$work/stunnel-server.conf" <<EOF
foreground = yes
pid =
debug = warning
[sink]
accept = 127.0.0.1:$stunnel_tls
connect = 127.0.0.1:$sink
cert = $work/stunnel.pem
key = $work/stunnel.key
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
EOF
cat > "$work/stunnel-client.conf" <<EOF
foreground = yes
pid =
debug = warning
[forward]
client = yes
accept = 127.0.0.1:$stunnel_forward
connect = 127.0.0.1:$stunnel_tls
verifyPeer = yes
CAfile = $work/stunnel.pem
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
EOF
stunnel4 "$work/stunnel-server.conf" 2>"$work/stunnel-server.log" &
pids+=($!)
wait_for_listener "$stunnel_tls" "${pids[-1]}" stunnel-server
stunnel4 "$work/stunnel-client.conf" 2>"$work/stunnel-client.log" &
pids+=($!)
wait_for_listener "$stunnel_forward" "${pids[-1]}" stunnel-client

status=0
"$@" --sink-port "$sink" --peer "ssh-L=127.0.0.1:$ssh_forward" --peer "stunnel=127.0.0.1:$stunnel_forward" || status=$?
exit "$status"
