#!/usr/bin/env bash
# Builds the tiny image the Docker integration tests run: `outrigger-test-busybox:latest`,
# a root filesystem holding only Debian's statically linked busybox. No registry is needed:
# the .deb comes from the host's apt sources and the image is made with `docker import`.
#
# Idempotent: exits at once when the image already exists (set OUTRIGGER_REBUILD_IMAGE=1 to
# build it again). Needs: docker, apt-get, dpkg-deb, tar. Runs `apt-get update` only when
# the package cannot be downloaded with the current lists.
set -euo pipefail

IMAGE="${OUTRIGGER_TEST_IMAGE:-outrigger-test-busybox:latest}"

if [[ "${OUTRIGGER_REBUILD_IMAGE:-0}" != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

for tool in docker apt-get dpkg-deb tar; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-image.sh: \`$tool\` is required but not installed" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# apt downloads as the unprivileged `_apt` user when it can reach the directory.
chmod 755 "$work"
cd "$work"

download() {
    apt-get download -q busybox-static >download.log 2>&1
}
if ! download; then
    # Fresh machines have no package lists yet.
    echo "build-image.sh: apt-get download failed; running apt-get update and retrying" >&2
    apt-get update -q >/dev/null
    if ! download; then
        cat download.log >&2
        exit 1
    fi
fi
deb="$(echo busybox-static_*.deb)"
[[ -f "$deb" ]] || { echo "build-image.sh: no .deb downloaded" >&2; exit 1; }

mkdir rootfs
dpkg-deb -x "$deb" rootfs
rm -rf rootfs/usr/share
busybox="rootfs/bin/busybox"
[[ -x "$busybox" ]] || { echo "build-image.sh: $deb has no bin/busybox" >&2; exit 1; }

# What `busybox --install -s` would do inside the image: a symlink per applet, at its usual
# path (bin/sh, usr/bin/env, ...). The binary is static, so it runs here to list them.
mkdir -p rootfs/usr/bin rootfs/sbin rootfs/usr/sbin rootfs/tmp rootfs/etc rootfs/proc \
    rootfs/sys rootfs/dev
chmod 1777 rootfs/tmp
"$busybox" --list-full | while read -r applet; do
    [[ -e "rootfs/$applet" || -L "rootfs/$applet" ]] || ln -s /bin/busybox "rootfs/$applet"
done
[[ -L rootfs/bin/sh ]] || { echo "build-image.sh: no bin/sh applet" >&2; exit 1; }
echo 'root:x:0:0:root:/root:/bin/sh' >rootfs/etc/passwd
echo 'root:x:0:' >rootfs/etc/group

version="$(dpkg-deb -f "$deb" Version)"
tar -C rootfs --numeric-owner --owner=0 --group=0 -cf rootfs.tar .
docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --message "busybox-static $version for Outrigger's tests" \
    rootfs.tar "$IMAGE" >/dev/null
echo "build-image.sh: built $IMAGE (busybox-static $version)"
