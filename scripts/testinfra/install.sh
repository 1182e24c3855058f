#!/bin/bash
# Install Slurm, munge, OpenSSH, Son of Grid Engine, rsync and the Torque-style
# (PBS) commands of slurm-wlm-torque.  Skips whatever is already installed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(slurmctld slurmd slurm-client munge openssh-server openssh-client
          gridengine-master gridengine-exec gridengine-client rsync
          libslurm-perl libslurmdb-perl libswitch-perl    # torque wrappers
          libpam-oath oathtool                            # the two-factor sshd (start_sshd_sites.sh)
          chromium)   # the run report is opened in it by the tests (Playwright drives this binary)

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }

missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done

apt_updated=0
apt_update_once() {
    ((apt_updated)) && return 0
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
}

if ((${#missing[@]})); then
    # gridengine asks where the cell and the master are: answer in advance.
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $HOST_S
EOF
    apt_update_once
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "packages already installed"
fi

# PBS command set: slurm-wlm-torque conflicts with gridengine-client, so unpack
# it aside.  Its qsub runs "$(dirname $0)/sbatch", hence the symlinks.
if [[ ! -x $OPT/torque/usr/bin/qsub ]]; then
    mkdir -p "$OPT/debs"
    if ! compgen -G "$OPT/debs/slurm-wlm-torque_*.deb" >/dev/null; then
        apt_update_once
        (cd "$OPT/debs" && apt-get download -qq -o APT::Sandbox::User=root slurm-wlm-torque)
    fi
    dpkg-deb -x "$(ls "$OPT"/debs/slurm-wlm-torque_*.deb | tail -1)" "$OPT/torque"
fi
mkdir -p "$OPT/pbs/bin"
for c in qsub qstat qdel qhold qrls qalter pbsnodes; do
    cmp -s "$OPT/torque/usr/bin/$c" "$OPT/pbs/bin/$c" || install -m 755 "$OPT/torque/usr/bin/$c" "$OPT/pbs/bin/$c"
done
for c in sbatch salloc srun squeue scontrol scancel sinfo sacct; do
    ln -sfn "/usr/bin/$c" "$OPT/pbs/bin/$c"
done
log "install done (PBS commands in $OPT/pbs/bin)"
