#!/bin/bash
# Two more OpenSSH servers on loopback, shaped like real sites (docs/site-*.md):
#   127.0.0.1:2223  two-factor: publickey AND a keyboard-interactive time-based one-time
#                   code (PAM pam_oath, secret in $RUNTIME/sshd_sites/totp_secret; compute a
#                   code with: oathtool --totp "$(cat .../totp_secret)")
#   127.0.0.1:2224  a jump host (key-only, TCP forwarding), and the login of the fresh
#                   account wflfresh, whose pip has no index (a cluster without internet)
# plus a client config $RUNTIME/sites_ssh_config naming them.  The shared sshd on :2222
# is not touched.  Idempotent: a no-op when both run with the same configuration.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

D="$RUNTIME/sshd_sites"
MFA_PORT=2223
JUMP_PORT=2224
MFA_SSHD="$OPT/sbin/sshd-mfa"          # its name selects /etc/pam.d/sshd-mfa (OpenSSH's PAM service)
OATH_USERS=/etc/wfl_async_users.oath
mkdir -p "$D" "$PIDDIR" "$OPT/sbin"
chmod 755 "$RUNTIME"
[[ -f $RUNTIME/sshd/client_key ]] || die "run start_sshd.sh first (it makes the client key)"

write_if_changed() {
    local f=$1 mode=$2 new; new=$(cat)
    [[ -f $f && "$(cat "$f")" == "$new" ]] || printf '%s\n' "$new" >"$f"
    chmod "$mode" "$f"
}

# --- the fresh account: python3 and nothing else; pip without an index ----------
id wflfresh >/dev/null 2>&1 || useradd -u 2001 -U -m -d /home/wflfresh -s /bin/bash wflfresh
[[ "$(getent shadow wflfresh | cut -d: -f2)" != '!'* ]] || usermod -p '*' wflfresh
install -d -o wflfresh -g wflfresh -m 700 /home/wflfresh/.ssh /home/wflfresh/.config /home/wflfresh/.config/pip
write_if_changed /home/wflfresh/.ssh/authorized_keys 600 <"$RUNTIME/sshd/client_key.pub"
write_if_changed /home/wflfresh/.config/pip/pip.conf 644 <<'EOF'
# no network on this "cluster": pip must never reach an index
[global]
no-index = true
EOF
write_if_changed /home/wflfresh/.bashrc 644 <<'EOF'
# wfl_async test account: a fresh cluster account without internet access
export PIP_NO_INDEX=1
case $- in *i*) ;; *) return ;; esac
EOF
chown -R wflfresh: /home/wflfresh/.ssh /home/wflfresh/.config /home/wflfresh/.bashrc

# --- TOTP second factor for wfltest --------------------------------------------------
[[ -s $D/totp_secret ]] || (umask 077 && head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$D/totp_secret")
chmod 600 "$D/totp_secret"
secret=$(cat "$D/totp_secret")
# pam_oath rewrites this file (last code used): only change the line when the secret changed.
# window=20: twenty steps ahead of the clock are accepted (a used step never is again), so the
# tests' logins in quick succession each get a fresh code without waiting for the clock
# (tests/helpers/totp.py's WINDOW; with 2, the two-factor tests waited ~30 s per login)
grep -q "^HOTP/T30/6 $TEST_USER - $secret" "$OATH_USERS" 2>/dev/null \
    || (umask 077 && echo "HOTP/T30/6 $TEST_USER - $secret" >"$OATH_USERS")
chmod 600 "$OATH_USERS"
write_if_changed /etc/pam.d/sshd-mfa 644 <<EOF
# Written by wfl_async scripts/testinfra/start_sshd_sites.sh: the one-time code, nothing else
auth     required pam_oath.so usersfile=$OATH_USERS window=20 digits=6
account  required pam_permit.so
session  required pam_permit.so
EOF
ln -sfn /usr/sbin/sshd "$MFA_SSHD"

# --- server keys and configs -----------------------------------------------------------
[[ -f $D/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C wfl-async-sites-host -f "$D/ssh_host_ed25519_key"
common() {
    cat <<EOF
ListenAddress 127.0.0.1
HostKey $D/ssh_host_ed25519_key
PermitRootLogin no
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
StrictModes no
MaxSessions 10
X11Forwarding no
Subsystem sftp internal-sftp
EOF
}
write_if_changed "$D/sshd_mfa_config" 644 <<EOF
# Written by scripts/testinfra/start_sshd_sites.sh: key AND one-time code
$(common)
Port $MFA_PORT
PidFile $D/sshd_mfa.pid
AllowUsers $TEST_USER
UsePAM yes
KbdInteractiveAuthentication yes
AuthenticationMethods publickey,keyboard-interactive
EOF
write_if_changed "$D/sshd_jump_config" 644 <<EOF
# Written by scripts/testinfra/start_sshd_sites.sh: jump host and the fresh account, keys only
$(common)
Port $JUMP_PORT
PidFile $D/sshd_jump.pid
AllowUsers $TEST_USER wflfresh
UsePAM no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
EOF
write_if_changed "$D/known_hosts" 644 <<EOF
[127.0.0.1]:$MFA_PORT $(cut -d' ' -f1,2 "$D/ssh_host_ed25519_key.pub")
[127.0.0.1]:$JUMP_PORT $(cut -d' ' -f1,2 "$D/ssh_host_ed25519_key.pub")
EOF

# start NAME BINARY COMM: start (or reload a changed config of) one of the two servers
start() {
    local name=$1 binary=$2 comm=$3 config="$D/sshd_$1_config" pidfile="$D/sshd_$1.pid"
    if ! pid_alive "$pidfile" "$comm"; then
        install -d -m 755 /run/sshd
        "$binary" -t -f "$config"
        log "starting sshd ($name) from $config"
        "$binary" -f "$config" -E "$D/sshd_$name.log"
        wait_for 10 "sshd ($name) pid file" pid_alive "$pidfile" "$comm"
    elif [[ $config -nt $pidfile ]]; then
        kill -HUP "$(cat "$pidfile")"
        sleep 0.5
    fi
    record_pid "sshd_$name" "$pidfile" "$comm"
}
start mfa "$MFA_SSHD" sshd-mfa
start jump /usr/sbin/sshd sshd

# --- client side ---------------------------------------------------------------------
write_if_changed "$RUNTIME/sites_ssh_config" 644 <<EOF
# Written by scripts/testinfra/start_sshd_sites.sh (tests add ControlPath etc. in their own copies)
Host wfl-async-mfa
    HostName 127.0.0.1
    Port $MFA_PORT
    User $TEST_USER
Host wfl-async-jump
    HostName 127.0.0.1
    Port $JUMP_PORT
    User $TEST_USER
Host wfl-async-mfa-via-jump
    HostName 127.0.0.1
    Port $MFA_PORT
    User $TEST_USER
    ProxyJump wfl-async-jump
Host wfl-async-fresh
    HostName 127.0.0.1
    Port $JUMP_PORT
    User wflfresh
Host wfl-async-mfa wfl-async-jump wfl-async-mfa-via-jump wfl-async-fresh
    IdentityFile $RUNTIME/sshd/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $D/known_hosts
    StrictHostKeyChecking yes
EOF

wait_for 10 "ssh wfl-async-fresh true" ssh -F "$RUNTIME/sites_ssh_config" -o BatchMode=yes wfl-async-fresh true
out=$(ssh -F "$RUNTIME/sites_ssh_config" -o BatchMode=yes wfl-async-mfa true 2>&1 || true)
[[ $out == *"Permission denied"* ]] || die "the two-factor sshd let a key-only login in: $out"
log "site sshds ready: two-factor on :$MFA_PORT, jump host and wflfresh on :$JUMP_PORT"
