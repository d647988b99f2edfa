#!/bin/sh
# Install auxot on a systemd host that has no .deb: the binary, the hardened units
# (auxot.service, auxot.socket, auxot-worker@.service), the `auxot` system user,
# /var/lib/auxot (0700) and /etc/auxot (a fresh secret key and an env file, each only if
# absent; existing ones are kept).
#
# Usage: packaging/install.sh [--dry-run] [BINARY]
#   BINARY     built binary; default the static build (packaging/build-static.sh)
#              target/x86_64-unknown-linux-gnu/release/auxot, else target/release/auxot
#   --dry-run  print what would be done, change nothing
# Environment:
#   PREFIX     the binary goes to $PREFIX/bin/auxot (default /usr)
#   DESTDIR    stage everything under this directory (no root needed, no systemctl)
set -eu

usage() { sed -n '2,14s/^# \{0,1\}//p' "$0"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

dry_run=0
bin=
for arg in "$@"; do
    case $arg in
        --dry-run) dry_run=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $arg (see --help)" ;;
        *) [ -z "$bin" ] || die "one binary at most"; bin=$arg ;;
    esac
done

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
if [ -z "$bin" ]; then
    for candidate in "$repo/target/x86_64-unknown-linux-gnu/release/auxot" "$repo/target/release/auxot"; do
        if [ -x "$candidate" ]; then bin=$candidate; break; fi
    done
    [ -n "$bin" ] || die "no built binary in $repo/target: run packaging/build-static.sh or give its path"
fi
if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then die "$bin is not an executable file"; fi

PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
case $PREFIX in /*) ;; *) die "PREFIX must be an absolute path" ;; esac
bindir=$PREFIX/bin
units="auxot.service auxot.socket auxot-worker@.service"
env_src=$repo/packaging/auxot.env
for u in $units; do
    [ -f "$repo/systemd/$u" ] || die "run me from an auxot source tree"
done
[ -f "$env_src" ] || die "run me from an auxot source tree"
unitdir=$DESTDIR/etc/systemd/system
data=$DESTDIR/var/lib/auxot
etc=$DESTDIR/etc/auxot
key=$etc/secret.key

if [ "$dry_run" = 0 ] && [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or set DESTDIR to stage the files, or --dry-run to preview)"
fi
is_root=0
[ "$(id -u)" = 0 ] && is_root=1

# Print each step; carry it out unless --dry-run.
run() {
    printf '+ %s\n' "$*"
    [ "$dry_run" = 1 ] || "$@"
}

# The binary: copy beside the target, then rename over it (safe while the old one runs).
run install -d -m 0755 "$DESTDIR$bindir"
run install -m 0755 "$bin" "$DESTDIR$bindir/auxot.new"
run mv -f "$DESTDIR$bindir/auxot.new" "$DESTDIR$bindir/auxot"

# The units, pointed at $PREFIX/bin/auxot. Ours to overwrite: local changes go in drop-ins.
run install -d -m 0755 "$unitdir"
for u in $units; do
    printf '+ install -m 0644 %s %s (binary %s/auxot)\n' "$repo/systemd/$u" "$unitdir/$u" "$bindir"
    if [ "$dry_run" = 0 ]; then
        sed "s|/usr/bin/auxot |$bindir/auxot |" "$repo/systemd/$u" > "$unitdir/$u.new"
        chmod 0644 "$unitdir/$u.new"
        mv -f "$unitdir/$u.new" "$unitdir/$u"
    fi
done

# The service's user. Only on the real root: a staged tree has no user database to edit.
if [ -z "$DESTDIR" ]; then
    if getent passwd auxot > /dev/null 2>&1; then
        printf '= user auxot exists, kept\n'
    else
        getent group auxot > /dev/null 2>&1 || run groupadd --system auxot
        run useradd --system --gid auxot --home-dir /var/lib/auxot --no-create-home \
            --shell /usr/sbin/nologin --comment "auxot AI inference router" auxot
    fi
else
    printf '= staged: create the auxot system user on the target host (useradd --system auxot)\n'
fi

# The data dir: the service user's alone.
if [ -d "$data" ]; then
    printf '= %s exists, kept as is\n' "$data"
elif [ -z "$DESTDIR" ]; then
    run install -d -m 0700 -o auxot -g auxot "$data"
else
    run install -d -m 0700 "$data"
fi

# /etc/auxot: root only. It holds the secret key and the env file.
if [ -d "$etc" ]; then
    printf '= %s exists, kept as is\n' "$etc"
else
    run install -d -m 0700 "$etc"
fi

if [ -e "$key" ]; then
    printf '= %s exists, kept (it opens the stored provider keys)\n' "$key"
else
    printf '+ %s keygen > %s (mode 0600)\n' "$bin" "$key"
    if [ "$dry_run" = 0 ]; then
        (
            umask 077
            "$bin" keygen > "$key.new"
        ) || { rm -f "$key.new"; die "'$bin keygen' failed"; }
        if ! grep -Eqx '[0-9a-fA-F]{64}' "$key.new"; then
            rm -f "$key.new"
            die "'$bin keygen' did not print a 64-hex-char key"
        fi
        chmod 0600 "$key.new"
        [ "$is_root" = 0 ] || chown root:root "$key.new"
        mv "$key.new" "$key"
    fi
fi

if [ -e "$etc/auxot.env" ]; then
    printf '= %s exists, kept\n' "$etc/auxot.env"
else
    run install -m 0600 "$env_src" "$etc/auxot.env"
fi

if [ "$dry_run" = 0 ] && [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
fi

if [ "$dry_run" = 1 ]; then
    printf '\n(dry run: nothing was changed)\n'
elif [ -n "$DESTDIR" ]; then
    printf '\nStaged under %s.\n' "$DESTDIR"
fi
cat <<EOF

Next steps:
  1. Back up /etc/auxot/secret.key now, somewhere safe and apart from the data:
     without it the provider keys stored in /var/lib/auxot cannot be opened.
  2. Optional: edit /etc/auxot/auxot.env (listen address, timeouts, RUST_LOG).
  3. systemctl enable --now auxot.socket auxot.service
  4. journalctl -u auxot -f       # logs
     curl -fsS http://127.0.0.1:8080/healthz
  5. Open http://127.0.0.1:8080/ and create the first admin account.
EOF
