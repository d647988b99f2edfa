#!/bin/sh
# Build target/deb/auxot_VERSION_amd64.deb from a built binary with dpkg-deb. No root needed.
#
# Usage: packaging/build-deb.sh [BINARY]
#   BINARY   default the static build (packaging/build-static.sh):
#            target/x86_64-unknown-linux-gnu/release/auxot, else target/release/auxot
# Environment:
#   VERSION  package version (default: the version in Cargo.toml)
set -eu
umask 022

die() { printf 'build-deb.sh: %s\n' "$*" >&2; exit 1; }

repo=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
case ${1:-} in
    -h|--help) sed -n '2,8s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
esac
[ "$#" -le 1 ] || die "one binary at most"
bin=${1:-}
if [ -z "$bin" ]; then
    for candidate in "$repo/target/x86_64-unknown-linux-gnu/release/auxot" "$repo/target/release/auxot"; do
        if [ -x "$candidate" ]; then bin=$candidate; break; fi
    done
    [ -n "$bin" ] || die "no built binary in $repo/target: run packaging/build-static.sh or give its path"
fi
if [ ! -f "$bin" ] || [ ! -x "$bin" ]; then die "$bin is not an executable file"; fi
command -v dpkg-deb > /dev/null || die "dpkg-deb not found (Debian/Ubuntu: apt-get install dpkg)"

version=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)}
case $version in
    [0-9]*) ;;
    *) die "cannot tell the version (got '$version'); set VERSION" ;;
esac

# The package has no Depends: warn when the binary is not static.
if command -v file > /dev/null; then
    case $(file -bL "$bin") in
        *ELF*dynamically\ linked*) echo "build-deb.sh: warning: $bin is dynamically linked; the .deb declares no dependencies" >&2 ;;
    esac
fi

out_dir=$repo/target/deb
out=$out_dir/auxot_${version}_amd64.deb
mkdir -p "$out_dir"
stage=$(mktemp -d "$out_dir/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM
chmod 0755 "$stage"

install -D -m 0755 "$bin" "$stage/usr/bin/auxot"
for unit in auxot.service auxot.socket auxot-worker@.service; do
    install -D -m 0644 "$repo/systemd/$unit" "$stage/usr/lib/systemd/system/$unit"
done
install -d -m 0700 "$stage/etc/auxot"
install -m 0600 "$repo/packaging/auxot.env" "$stage/etc/auxot/auxot.env"
install -D -m 0644 "$repo/docs/operations.md" "$stage/usr/share/doc/auxot/operations.md"
install -D -m 0644 "$repo/packaging/worker.env" "$stage/usr/share/doc/auxot/worker.env"

install -d -m 0755 "$stage/DEBIAN"
size=$(du -sk "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" \
    "$repo/packaging/deb/control" > "$stage/DEBIAN/control"
install -m 0644 "$repo/packaging/deb/conffiles" "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$repo/packaging/deb/$script" "$stage/DEBIAN/$script"
done

# --root-owner-group: every file is root:root in the package without needing fakeroot.
dpkg-deb --root-owner-group --build "$stage" "$out"
echo "$out"
