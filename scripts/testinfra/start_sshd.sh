#!/bin/bash
# OpenSSH server on 127.0.0.1:2222 (own host key, key-only auth) for the test
# user wfltest, plus an ssh client config "Host wfl-async-test" and one-word
# ssh wrappers under the runtime dir.  No-op when already running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D="$RUNTIME/sshd"
PORT=2222
mkdir -p "$D" "$RUNTIME/bin" "$PIDDIR"
chmod 755 "$RUNTIME"

# write_if_changed FILE MODE: stdin -> FILE, only when the content differs.
write_if_changed() {
    local f=$1 mode=$2 new; new=$(cat)
    [[ -f $f && "$(cat "$f")" == "$new" ]] || printf '%s\n' "$new" >"$f"
    chmod "$mode" "$f"
}

# --- test user with a plain shell setup (no pyenv init) -------------------------
ensure_test_user
write_if_changed "$TEST_HOME/.bashrc" 644 <<'EOF'
# wfl_async test user: plain setup, like a cluster account (no pyenv init).
# Non-interactive part (also read for `ssh host command`): Grid Engine env.
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
case $- in *i*) ;; *) return ;; esac
PS1='\u@\h:\w\$ '
EOF
write_if_changed "$TEST_HOME/.profile" 644 <<'EOF'
[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"
EOF

# The test user must run the same interpreter as the tests (root's pyenv).
PY=$(test_python)
chmod o+x /root
su "$TEST_USER" -c "$PY -c 'import ase, anyio, cloudpickle'" \
    || die "$TEST_USER cannot import ase/anyio/cloudpickle with $PY"

# --- keys ----------------------------------------------------------------------
[[ -f $D/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C wfl-async-test-host -f "$D/ssh_host_ed25519_key"
[[ -f $D/client_key ]] || ssh-keygen -q -t ed25519 -N '' -C wfl-async-test-client -f "$D/client_key"
install -d -o "$TEST_USER" -g "$TEST_USER" -m 700 "$TEST_HOME/.ssh"
write_if_changed "$TEST_HOME/.ssh/authorized_keys" 600 <"$D/client_key.pub"
chown "$TEST_USER:" "$TEST_HOME/.ssh/authorized_keys" "$TEST_HOME/.bashrc" "$TEST_HOME/.profile"
write_if_changed "$RUNTIME/known_hosts" 644 <<EOF
[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$D/ssh_host_ed25519_key.pub")
EOF

# --- server ---------------------------------------------------------------------
write_if_changed "$D/sshd_config" 644 <<EOF
# Written by scripts/testinfra/start_sshd.sh
ListenAddress 127.0.0.1
Port $PORT
HostKey $D/ssh_host_ed25519_key
PidFile $D/sshd.pid
AllowUsers $TEST_USER
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 10
X11Forwarding no
Subsystem sftp internal-sftp
EOF
if ! pid_alive "$D/sshd.pid" sshd; then
    install -d -m 755 /run/sshd
    /usr/sbin/sshd -t -f "$D/sshd_config"
    log "starting sshd on 127.0.0.1:$PORT"
    /usr/sbin/sshd -f "$D/sshd_config" -E "$D/sshd.log"
    wait_for 10 "sshd pid file" pid_alive "$D/sshd.pid" sshd
elif [[ "$D/sshd_config" -nt "$D/sshd.pid" ]]; then
    kill -HUP "$(cat "$D/sshd.pid")"   # reload a changed config
    sleep 0.5
fi
record_pid sshd "$D/sshd.pid" sshd

# --- client side: config + one-word wrappers (for rsync -e / ExPyRe) ----------
write_if_changed "$RUNTIME/ssh_config" 644 <<EOF
Host wfl-async-test
    HostName 127.0.0.1
    Port $PORT
    User $TEST_USER
    IdentityFile $D/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $RUNTIME/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
write_if_changed "$RUNTIME/bin/ssh-wfl-test" 755 <<EOF
#!/bin/sh
exec ssh -F $RUNTIME/ssh_config "\$@"
EOF
write_if_changed "$RUNTIME/bin/ssh-wfl-test-cm" 755 <<EOF
#!/bin/sh
exec ssh -F $RUNTIME/ssh_config -o ControlMaster=auto -o ControlPath=$RUNTIME/cm-%C -o ControlPersist=60 "\$@"
EOF

wait_for 10 "ssh wfl-async-test true" ssh -F "$RUNTIME/ssh_config" wfl-async-test true
t0=$(date +%s%N)
out=$(ssh -F "$RUNTIME/ssh_config" wfl-async-test 'echo $USER')
t1=$(date +%s%N)
[[ $out == "$TEST_USER" ]] || die "ssh round trip returned '$out'"
log "sshd ready: ssh wfl-async-test round trip (new connection) $(((t1 - t0) / 1000000)) ms"
