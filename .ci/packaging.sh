#!/usr/bin/env bash
# CI: the appliance as an operator gets it. One release build (static), then:
#   - it is fully static and runs `serve` with an empty environment and in a bare chroot
#     (only the binary and a data dir: no /etc, no libc, no NSS, no CA files);
#   - the .deb built from it installs (user, data dir, root-only key for LoadCredential=),
#     upgrades in place keeping data and key, removes and purges as Debian policy says;
#   - every systemd unit passes `systemd-analyze verify`, and auxot.service's offline
#     security score is at most 2.0 and is the one docs/operations.md states;
#   - packaging/install.sh installs into a temporary root.
# Runs as root (CI does); changes this machine's package database and leaves it clean.
# AUXOT_STATIC_BIN=path skips the build and checks that binary instead (local iteration).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'packaging: FAIL: %s\n' "$*" >&2; exit 1; }

need_apt=()
command -v systemd-analyze > /dev/null || need_apt+=(systemd)
command -v dpkg-deb > /dev/null || need_apt+=(dpkg)
command -v curl > /dev/null || need_apt+=(curl)
if [ "${#need_apt[@]}" -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi
[ "$(id -u)" = 0 ] || fail "run as root (dpkg -i, chroot)"

work=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2> /dev/null || true; fi
    dpkg -P auxot > /dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Starts `$@` (a serve command listening on 127.0.0.1:0) with its log in $work/$name.log;
# sets $url from its "listening" line.
start_server() {
    local name=$1
    shift
    "$@" > "$work/$name.log" 2>&1 &
    server_pid=$!
    url=
    for _ in $(seq 1 100); do
        url=$(sed -n 's/.*auxot listening on \(http:[^ ]*\).*/\1/p' "$work/$name.log" | head -n 1)
        [ -n "$url" ] && break
        kill -0 "$server_pid" 2> /dev/null || { cat "$work/$name.log"; fail "$name: the server exited"; }
        sleep 0.1
    done
    [ -n "$url" ] || { cat "$work/$name.log"; fail "$name: no listening line"; }
    curl -fsS "$url/healthz" | grep -q '"ok"' || fail "$name: /healthz did not answer ok"
}

stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || fail "the server did not exit cleanly on SIGTERM"
    server_pid=
}

say "static build"
bin=${AUXOT_STATIC_BIN:-$(bash packaging/build-static.sh)}
ldd_out=$(ldd "$bin" 2>&1 || true)
case $ldd_out in
    *"not a dynamic executable"*) echo "ldd: not a dynamic executable" ;;
    *) fail "ldd $bin: $ldd_out" ;;
esac
printf 'size: %s bytes (%s MiB)\n' "$(stat -c %s "$bin")" "$(( $(stat -c %s "$bin") / 1048576 ))"

say "serve with an empty environment"
mkdir -p "$work/envdata"
start_server env-i env -i "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/envdata"
stop_server
[ -s "$work/envdata/secret.key" ] || fail "no key generated in the data dir"

say "serve in a bare chroot (the binary and a data dir, nothing else)"
root=$work/chroot
mkdir -p "$root/data"
cp "$bin" "$root/auxot"
start_server chroot env -i "$(command -v chroot)" "$root" /auxot serve --listen 127.0.0.1:0 --data-dir /data
stop_server
ls "$root" | sort | tr '\n' ' ' | grep -qx 'auxot data ' || fail "the chroot grew: $(ls "$root")"

say ".deb"
dpkg -P auxot > /dev/null 2>&1 || true
# Debian keeps a package's system user after purge; the CI machine gets back what it had.
had_user=$(getent passwd auxot > /dev/null && echo yes || true)
deb=$(bash packaging/build-deb.sh "$bin" | tail -n 1)
dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\|Installed-Size\):/  &/p'
dpkg -i "$deb"
for f in /usr/bin/auxot /usr/lib/systemd/system/auxot.service /usr/lib/systemd/system/auxot.socket \
    /usr/lib/systemd/system/auxot-worker@.service /etc/auxot/auxot.env /usr/share/doc/auxot/operations.md; do
    [ -e "$f" ] || fail "$f is missing after dpkg -i"
done
getent passwd auxot > /dev/null || fail "no auxot system user"
[ "$(id -u auxot)" -lt 1000 ] || fail "auxot is not a system user (uid $(id -u auxot))"
[ "$(stat -c '%a %U %G' /var/lib/auxot)" = "700 auxot auxot" ] || fail "/var/lib/auxot is $(stat -c '%a %U %G' /var/lib/auxot)"
[ "$(stat -c '%a %U %G' /etc/auxot)" = "700 root root" ] || fail "/etc/auxot is $(stat -c '%a %U %G' /etc/auxot)"
key=/etc/auxot/secret.key
[ "$(stat -c '%a %U %G' "$key")" = "600 root root" ] || fail "$key is $(stat -c '%a %U %G' "$key")"
grep -Eqx '[0-9a-f]{64}' "$key" || fail "$key does not hold a key"
unit=/usr/lib/systemd/system/auxot.service
grep -qx 'LoadCredential=auxot-secret-key:/etc/auxot/secret.key' "$unit" || fail "the unit does not load the key as a credential"
if grep -Eq '^(Environment=.*AUXOT_SECRET_KEY|.*AUXOT_SECRET_KEY=)' "$unit" /etc/auxot/auxot.env; then
    fail "the key is passed in an environment variable"
fi
key_sum=$(sha256sum "$key")

# The service as systemd runs it: the auxot user, the key as a credential copy.
creds=$work/creds
chmod 0711 "$work"    # the auxot user must reach its credential directory, as under /run
install -d -m 0700 -o auxot -g auxot "$creds"
install -m 0400 -o auxot -g auxot "$key" "$creds/auxot-secret-key"
# UMask=0077 as in the unit; setpriv stands in for User=auxot.
start_server deb-service env -i CREDENTIALS_DIRECTORY="$creds" /bin/sh -c \
    "umask 077 && exec $(command -v setpriv) --reuid auxot --regid auxot --clear-groups /usr/bin/auxot serve --data-dir /var/lib/auxot --listen 127.0.0.1:0"
stop_server
[ "$(stat -c '%a %U' /var/lib/auxot/auxot.redb)" = "600 auxot" ] || fail "auxot.redb is $(stat -c '%a %U' /var/lib/auxot/auxot.redb)"
[ ! -e /var/lib/auxot/secret.key ] || fail "the service generated its own key instead of using the credential"

say "systemd units"
for u in auxot.service auxot.socket auxot-worker@.service; do
    systemd-analyze verify "/usr/lib/systemd/system/$u" || fail "systemd-analyze verify $u"
    echo "verify $u: ok"
done
score_line=$(systemd-analyze security --offline=true "$unit" 2>&1 | grep 'Overall exposure level')
echo "$score_line"
score=$(printf '%s\n' "$score_line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
awk -v s="$score" 'BEGIN { exit !(s + 0 <= 2.0) }' || fail "security exposure $score > 2.0"
grep -q "exposure level for auxot.service: $score" docs/operations.md \
    || fail "docs/operations.md does not state the score $score"

say "upgrade keeps data and key; remove keeps them; purge removes them"
dpkg -i "$deb"
[ "$(sha256sum "$key")" = "$key_sum" ] || fail "the upgrade replaced the secret key"
[ -s /var/lib/auxot/auxot.redb ] || fail "the upgrade lost the database"
dpkg -r auxot
[ ! -e /usr/bin/auxot ] || fail "remove left /usr/bin/auxot"
[ "$(sha256sum "$key")" = "$key_sum" ] || fail "remove touched the secret key"
[ -s /var/lib/auxot/auxot.redb ] || fail "remove deleted the data"
dpkg -P auxot
[ ! -e /etc/auxot ] || fail "purge left /etc/auxot"
[ ! -e /var/lib/auxot ] || fail "purge left /var/lib/auxot"
[ -n "$had_user" ] || userdel auxot 2> /dev/null || true
echo "install, upgrade, remove, purge: ok"

say "install.sh into a temporary root"
dest=$work/destdir
DESTDIR=$dest bash packaging/install.sh "$bin" > "$work/install.log"
for f in usr/bin/auxot etc/systemd/system/auxot.service etc/systemd/system/auxot.socket \
    etc/systemd/system/auxot-worker@.service etc/auxot/auxot.env; do
    [ -e "$dest/$f" ] || { cat "$work/install.log"; fail "install.sh did not install $f"; }
done
[ "$(stat -c %a "$dest/etc/auxot/secret.key")" = 600 ] || fail "install.sh: secret.key mode"
[ "$(stat -c %a "$dest/var/lib/auxot")" = 700 ] || fail "install.sh: /var/lib/auxot mode"
cmp -s "$bin" "$dest/usr/bin/auxot" || fail "install.sh installed another binary"
# Again: existing key kept.
sum=$(sha256sum < "$dest/etc/auxot/secret.key")
DESTDIR=$dest bash packaging/install.sh "$bin" > /dev/null
[ "$(sha256sum < "$dest/etc/auxot/secret.key")" = "$sum" ] || fail "install.sh replaced an existing key"
echo "install.sh: ok"

say "packaging: all checks passed"
