#!/usr/bin/env bash
# torchenv.sh - provide a libtorch that gotch v0.9.1 compiles against, and run
# commands (go build, go test, the diad binary) with the matching cgo flags.
#
#   torchenv.sh setup          choose/prepare a libtorch (idempotent)
#   torchenv.sh exec CMD...    run CMD with the libtorch environment
#   torchenv.sh info           print what was chosen
#
# Choice, in this order (see docs/deploy.md, "How the build finds libtorch"):
#   1. LIBTORCH=/path          a user-supplied libtorch (lib/, include/), CPU or CUDA
#   2. system libtorch-dev     >= 2.1 (Debian 13+, Ubuntu), installed through apt if
#                              the host's archive offers a compatible version
#   3. Debian 13 build root    debootstrap'ed under .cache/trixie-root on hosts whose
#                              libtorch is too old (Debian 12); commands then run in it
#                              through chroot in a private mount namespace, so no mount
#                              outlives the command.
#
# Environment: LIBTORCH, DIAD_CUDA=1 (link the real CUDA libraries), CUDA_HOME
# (default /usr/local/cuda), DIAD_CACHE (default <repo>/.cache),
# DIAD_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${DIAD_CACHE:-$repo/.cache}
root="$cache/trixie-root"
envfile="$cache/torchenv.env"
mirror=${DIAD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Packages of the build root. Adding one here makes the next setup install it
# into an existing root (the marker records the list).
root_packages=(libtorch-dev g++ gcc libc6-dev ca-certificates libopenblas0-pthread
  git make procps chromium fonts-dejavu-core python3-torch python3-torchvision python3-yaml)
# oneDNN, which libtorch's CPU convolutions call: Debian 13's libdnnl3.6
# 3.7.2 computes wrong input gradients for convolutions with few output
# channels on AMD Zen 5 (family 26): NaN, or values off by 0.2-0.4, at 1 or 2
# threads, so every training step of diad is NaN there. Debian's next suite
# ships 3.12.1 under the same soname and package name (needing only libc6 and
# libstdc++6 that Debian 13 has), which computes right on Zen 5 and on the Zen 4
# and AVX2 machines 3.7.2 was right on. Only this one package comes from that
# suite (the suite is pinned at priority 1: never chosen unless named).
# diad's numerical self-check still guards every process (diad doctor).
onednn_suite=forky
onednn_package=libdnnl3.6
onednn_min=3.12
# Debian 13's own oneDNN is kept aside, unpacked under this folder of the root,
# for the test that loads it on purpose and shows the self-check's fallback.
onednn_aside=/opt/diad/onednn-trixie
# gotch's libtch/lib.go hard-codes these CUDA libraries in its link line.
cuda_libs=(cuda cudart cublas cudnn caffe2_nvrtc nvrtc-builtins nvrtc nvToolsExt c10_cuda torch_cuda)

say() { printf 'torchenv: %s\n' "$*" >&2; }
die() { printf 'torchenv: error: %s\n' "$*" >&2; exit 1; }

# version_from_header DIR prints the libtorch version found in DIR/torch/version.h.
version_from_header() {
  local h
  for h in "$1/torch/csrc/api/include/torch/version.h" "$1/torch/version.h" ""; do
    [ -f "$h" ] && break
  done
  [ -n "$h" ] || return 1
  local major minor patch
  major=$(sed -n 's/^#define TORCH_VERSION_MAJOR \([0-9]*\).*/\1/p' "$h")
  minor=$(sed -n 's/^#define TORCH_VERSION_MINOR \([0-9]*\).*/\1/p' "$h")
  patch=$(sed -n 's/^#define TORCH_VERSION_PATCH \([0-9]*\).*/\1/p' "$h")
  [ -n "$major" ] && [ -n "$minor" ] || return 1
  echo "$major.$minor.${patch:-0}"
}

# version_at_least A B: true when version A >= B (major.minor only).
version_at_least() {
  local a_major a_minor b_major b_minor
  IFS=. read -r a_major a_minor _ <<<"$1"
  IFS=. read -r b_major b_minor _ <<<"$2"
  ((a_major > b_major || (a_major == b_major && a_minor >= b_minor)))
}

write_env() { # mode prefix include lib version
  mkdir -p "$cache"
  local tmp="$envfile.tmp.$$"
  {
    printf 'TORCH_MODE=%q\n' "$1"
    printf 'TORCH_INCLUDE=%q\n' "$2"
    printf 'TORCH_LIB=%q\n' "$3"
    printf 'TORCH_VERSION=%q\n' "$4"
  } >"$tmp"
  mv "$tmp" "$envfile"
  say "using libtorch $4 ($1: include $2, lib $3)"
}

check_layout() { # include lib: the files gotch needs
  [ -f "$1/torch/csrc/api/include/torch/torch.h" ] || [ -f "$1/torch/torch.h" ] ||
    die "no torch/torch.h under $1 (expected libtorch's include/ layout)"
  ls "$2"/libtorch_cpu.so* >/dev/null 2>&1 || die "no libtorch_cpu.so in $2"
  ls "$2"/libc10.so* >/dev/null 2>&1 || die "no libc10.so in $2"
}

setup_user_libtorch() {
  local p=$LIBTORCH
  [ -d "$p" ] || die "LIBTORCH=$p is not a directory"
  check_layout "$p/include" "$p/lib"
  local v
  v=$(version_from_header "$p/include") || die "LIBTORCH=$p has no include/torch/version.h"
  version_at_least "$v" 2.1 || die "LIBTORCH=$p is libtorch $v; gotch v0.9.1 needs >= 2.1"
  write_env user "$p/include" "$p/lib" "$v"
}

system_libtorch_version() { # prints the installed libtorch-dev version (upstream part)
  dpkg-query -W -f='${Status} ${Version}\n' libtorch-dev 2>/dev/null |
    awk '$3=="installed"{print $4}' | sed 's/^[0-9]*://; s/[+~-].*//'
}

apt_candidate_version() { # candidate version of a package in the host's archive
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/{print $2}' | sed 's/^[0-9]*://; s/[+~-].*//'
}

setup_system_libtorch() { # returns 1 when the host has no usable system libtorch
  command -v dpkg-query >/dev/null || return 1
  local v
  v=$(system_libtorch_version)
  if [ -z "$v" ]; then
    local cand
    cand=$(apt_candidate_version libtorch-dev)
    if [ -n "$cand" ] && [ "$cand" != "(none)" ] && version_at_least "$cand" 2.1; then
      [ "$(id -u)" = 0 ] || die "libtorch-dev $cand is available from apt; install it (root needed): apt-get install libtorch-dev g++ libopenblas0-pthread"
      say "installing the system's libtorch-dev $cand"
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libtorch-dev g++ libopenblas0-pthread >&2
      v=$(system_libtorch_version)
    fi
  fi
  [ -n "$v" ] || return 1
  if ! version_at_least "$v" 2.1; then
    say "system libtorch-dev is $v, too old for gotch v0.9.1 (needs >= 2.1)"
    return 1
  fi
  local lib=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  check_layout /usr/include "$lib"
  # The host's packages are the user's: an old oneDNN is reported, not
  # replaced (the self-check switches it off where it computes wrong).
  local dnnl
  dnnl=$(dpkg-query -W -f='${Status} ${Version}\n' "$onednn_package" 2>/dev/null | awk '$3=="installed"{print $4}' | sed 's/^[0-9]*://; s/[+~-].*//')
  if [ -n "$dnnl" ] && ! version_at_least "$dnnl" "$onednn_min"; then
    say "warning: the system's oneDNN is $dnnl, older than $onednn_min, which computes wrong convolution gradients on some CPUs (AMD Zen 5); diad's self-check switches it off where it does - see 'diad doctor'. Installing $onednn_package >= $onednn_min (Debian forky) fixes it."
  fi
  write_env system /usr/include "$lib" "$(version_from_header /usr/include || echo "$v")"
}

# ---- Debian 13 build root -------------------------------------------------------

marker="$root/.diad-root-ready"
packages_id() { printf '%s\n' "${root_packages[@]}" | sort | tr '\n' ' '; }
onednn_marker="$root/.diad-onednn"

# mounted_under DIR: true if the host's mount table has anything under DIR.
mounted_under() { awk -v d="$1" '$2==d || index($2, d"/")==1 {found=1} END{exit !found}' /proc/self/mounts; }

root_healthy() {
  [ -f "$marker" ] && [ -x "$root/usr/bin/g++" ] && version_from_header "$root/usr/include" >/dev/null &&
    chroot "$root" /usr/bin/g++ --version >/dev/null 2>&1
}

root_apt_install() {
  # /proc is needed by some maintainer scripts; keep the mount private to this call.
  unshare -m --propagation private -- bash -c '
    set -e
    r=$1; shift
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    cp /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
      bash -c "apt-get update -q && apt-get install -y -q --no-install-recommends $* && apt-get clean"
  ' _ "$root" "${root_packages[@]}" >&2
}

# root_onednn installs oneDNN from $onednn_suite (see onednn_suite above) and
# unpacks Debian 13's own library under $onednn_aside. A failure here is a
# warning, not an error: the self-check then decides per process whether
# oneDNN can be used.
root_onednn() {
  unshare -m --propagation private -- bash -c '
    set -e
    r=$1 suite=$2 pkg=$3 aside=$4 mirror=$5
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    cat >"$r/etc/apt/sources.list.d/diad-$suite.sources" <<SRC
Types: deb
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
Check-Valid-Until: no
SRC
    cat >"$r/etc/apt/preferences.d/diad-$suite" <<PIN
Package: *
Pin: release n=$suite
Pin-Priority: 1
PIN
    in_root() { chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive bash -c "$1"; }
    in_root "apt-get update -q"
    if [ ! -f "$r$aside/.done" ]; then
      in_root "set -e; rm -rf $aside; mkdir -p $aside; cd $aside; apt-get download -q $pkg/trixie; dpkg-deb -x ${pkg}_*.deb .; rm -f ${pkg}_*.deb; touch .done" ||
        echo "torchenv: warning: could not keep Debian 13'"'"'s oneDNN aside (the fallback test will skip)" >&2
    fi
    in_root "apt-get install -y -q --no-install-recommends $pkg/$suite && apt-get clean"
  ' _ "$root" "$onednn_suite" "$onednn_package" "$onednn_aside" "$mirror" >&2
}

# root_onednn_version prints the upstream version of the root's oneDNN package.
root_onednn_version() {
  chroot "$root" dpkg-query -W -f='${Version}' "$onednn_package" 2>/dev/null | sed 's/^[0-9]*://; s/[+~-].*//'
}

create_root() {
  [ "$(id -u)" = 0 ] || die "creating the Debian 13 build root needs root (debootstrap, chroot); run as root or set LIBTORCH=/path/to/libtorch"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 ||
      die "debootstrap is missing and apt-get install debootstrap failed"
  fi
  if [ -e "$root" ]; then
    mounted_under "$root" && die "something is still mounted under $root; unmount it first"
    say "removing the broken build root $root"
    rm -rf --one-file-system "$root"
  fi
  local tmp="$root.partial"
  if [ -e "$tmp" ]; then
    mounted_under "$tmp" && die "something is still mounted under $tmp"
    rm -rf --one-file-system "$tmp"
  fi
  mkdir -p "$cache"
  say "creating a Debian 13 (trixie) build root in $root (debootstrap, about a minute)"
  debootstrap --variant=minbase trixie "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    die "debootstrap trixie failed; see $cache/debootstrap.log"
  mv "$tmp" "$root"
}

setup_root() {
  [ "$(uname -m)" = x86_64 ] || say "warning: the build root has only been tried on x86_64"
  if [ ! -d "$root" ] || [ ! -x "$root/usr/bin/apt-get" ]; then
    create_root
  fi
  if ! root_healthy || [ "$(cat "$marker" 2>/dev/null)" != "$(packages_id)" ]; then
    say "installing ${root_packages[*]} into the build root (about a minute)"
    if ! root_apt_install; then
      say "apt in the build root failed; recreating it"
      rm -f "$marker"
      mv "$root" "$root.broken.$$" && rm -rf --one-file-system "$root.broken.$$"
      create_root
      root_apt_install || die "could not install ${root_packages[*]} into the build root"
    fi
    packages_id >"$marker"
    root_healthy || die "the build root at $root is unusable after repair (g++ or torch headers missing)"
  fi
  if [ "$(cat "$onednn_marker" 2>/dev/null)" != "$onednn_package/$onednn_suite" ]; then
    say "installing $onednn_package from Debian $onednn_suite into the build root (see onednn_suite in $0)"
    if root_onednn; then
      echo "$onednn_package/$onednn_suite" >"$onednn_marker"
    else
      say "warning: could not install $onednn_package from $onednn_suite; Debian 13's oneDNN stays (next setup tries again)"
    fi
  fi
  local dnnl
  dnnl=$(root_onednn_version)
  if [ -z "$dnnl" ] || ! version_at_least "$dnnl" "$onednn_min"; then
    say "warning: the build root's oneDNN is ${dnnl:-missing}, older than $onednn_min, which computes wrong convolution gradients on some CPUs; diad's self-check switches oneDNN off where it does (see 'diad doctor')"
  fi
  local v
  v=$(version_from_header "$root/usr/include") || die "no torch/version.h in the build root"
  write_env root /usr/include /usr/lib/x86_64-linux-gnu "$v"
}

cmd_setup() {
  if [ -n "${LIBTORCH:-}" ]; then
    setup_user_libtorch
  elif setup_system_libtorch; then
    :
  else
    say "no compatible system libtorch; using a Debian 13 build root"
    setup_root
  fi
  ensure_go_modules
}

ensure_go_modules() {
  # Modules are fetched on the host (which has the network); the build root reuses the cache.
  (cd "$repo" && go mod download) || die "go mod download failed (is the Go module proxy reachable?)"
}

# ---- running commands ------------------------------------------------------------

load_env() {
  [ -f "$envfile" ] || die "no libtorch chosen yet; run 'make setup' first"
  # shellcheck disable=SC1090
  . "$envfile"
  if [ -n "${LIBTORCH:-}" ] && [ "$TORCH_MODE" != user ]; then
    die "LIBTORCH is set but setup chose $TORCH_MODE; run 'make setup' again"
  fi
}

# build_flags prints the cgo environment as NAME=VALUE lines for the chosen libtorch.
build_flags() {
  local inc=$TORCH_INCLUDE lib=$TORCH_LIB stubs="$cache/cuda-stubs" cxx
  cxx="-I$inc -I$inc/torch/csrc/api/include"
  # libtorch > 2.1 changed three ATen signatures gotch's generated wrappers call.
  if ! [[ $TORCH_VERSION == 2.1.* ]]; then
    # The header's hash is part of the flags so that Go's build cache, which
    # keys on flags but not on force-included files, rebuilds gotch when it changes.
    local h
    h=$(sha256sum "$here/compat/torch21_compat.h" | cut -c1-16)
    cxx="$cxx -include $here/compat/torch21_compat.h -DDIAD_COMPAT_H=$h"
  fi
  local ld="-L$lib -Wl,-rpath,$lib"
  if [ "${DIAD_CUDA:-0}" = 1 ]; then
    local cuda=${CUDA_HOME:-/usr/local/cuda}
    # torch_cuda registers its kernels from static initialisers: keep it linked.
    ld="$ld -L$cuda/lib64 -Wl,-rpath,$cuda/lib64 -Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed -L$stubs"
  else
    ld="$ld -Wl,--as-needed -L$stubs"
  fi
  printf 'CGO_CPPFLAGS=%s\n' "-I$inc -I$inc/torch/csrc/api/include"
  printf 'CGO_CXXFLAGS=%s\n' "$cxx -O2 -std=c++17 -w"
  printf 'CGO_LDFLAGS=%s\n' "$ld"
  printf 'DIAD_TORCH_VERSION=%s\n' "$TORCH_VERSION"
  printf 'DIAD_TORCH_MODE=%s\n' "$TORCH_MODE"
}

# make_stubs builds empty libraries for the CUDA names gotch links, except those a
# CUDA build finds for real. With --as-needed they never reach the binary.
make_stubs() { # runs inside the build environment
  local stubs="$cache/cuda-stubs" n found d
  mkdir -p "$stubs"
  for n in "${cuda_libs[@]}"; do
    [ -f "$stubs/lib$n.so" ] && continue
    found=
    if [ "${DIAD_CUDA:-0}" = 1 ]; then
      for d in "$TORCH_LIB" "${CUDA_HOME:-/usr/local/cuda}/lib64"; do
        ls "$d/lib$n.so"* >/dev/null 2>&1 && found=1
      done
    fi
    [ -n "$found" ] && continue
    printf '' | gcc -x c -shared -nostdlib -o "$stubs/lib$n.so" - ||
      die "could not build the stub lib$n.so (is gcc installed?)"
  done
}

cmd_exec() {
  load_env
  [ $# -gt 0 ] || die "exec needs a command"
  local gocache=${DIAD_GOCACHE:-$cache/go-build-$TORCH_MODE}
  local flags
  flags=$(build_flags)
  if [ "$TORCH_MODE" != root ]; then
    local line
    while IFS= read -r line; do export "${line?}"; done <<<"$flags"
    export GOCACHE=$gocache
    make_stubs
    exec "$@"
  fi
  [ "$(id -u)" = 0 ] || die "the Debian 13 build root needs root to enter (chroot)"
  [ -f "$marker" ] || die "the build root is not ready; run 'make setup'"
  local goroot gomodcache gopath
  goroot=$(go env GOROOT)
  gomodcache=$(go env GOMODCACHE)
  gopath=$(go env GOPATH)
  mkdir -p "$gocache" "$gomodcache"
  # A private mount namespace: every bind mount below disappears with this process tree.
  exec unshare -m --propagation private -- bash -s -- "$@" <<EOF
set -euo pipefail
r=$(printf %q "$root")
bind() { mkdir -p "\$r\$2"; mount --bind "\$1" "\$r\$2"; }
mount -t proc proc "\$r/proc"
mount --rbind /dev "\$r/dev"
mount --rbind /sys "\$r/sys"
bind $(printf %q "$goroot") $(printf %q "$goroot")
bind $(printf %q "$gomodcache") $(printf %q "$gomodcache")
bind $(printf %q "$repo") $(printf %q "$repo")
mkdir -p "\$r/dev/shm"; mount -t tmpfs shm "\$r/dev/shm" 2>/dev/null || true
cp /etc/resolv.conf "\$r/etc/resolv.conf" 2>/dev/null || true
cp /etc/hosts "\$r/etc/hosts" 2>/dev/null || true
exec chroot "\$r" /usr/bin/env -i \
  PATH=$(printf %q "$goroot/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin") \
  HOME=/root TERM=$(printf %q "${TERM:-dumb}") \
  GOROOT=$(printf %q "$goroot") GOMODCACHE=$(printf %q "$gomodcache") GOPATH=$(printf %q "$gopath") \
  GOCACHE=$(printf %q "$gocache") GOFLAGS=$(printf %q "${GOFLAGS:-}") GOPROXY=off GOTOOLCHAIN=local \
  $(while IFS= read -r line; do printf '%q ' "$line"; done <<<"$flags") \
  DIAD_CUDA=$(printf %q "${DIAD_CUDA:-0}") DIAD_CACHE=$(printf %q "$cache") \
  $(for v in $(compgen -e | grep -E '^(DIAD_|GOMAXPROCS|GOGC|GODEBUG|OMP_|OPENBLAS_|MKL_|SLURM_|JOB_COMPLETION_INDEX$)' || true); do printf '%q ' "$v=${!v}"; done) \
  bash -c 'cd $(printf %q "$PWD") && $(printf %q "$here/torchenv.sh") _stubs && exec "\$@"' _ "\$@"
EOF
}

cmd_info() {
  load_env
  printf 'mode: %s\nlibtorch: %s\ninclude: %s\nlib: %s\ncuda link: %s\n' \
    "$TORCH_MODE" "$TORCH_VERSION" "$TORCH_INCLUDE" "$TORCH_LIB" "${DIAD_CUDA:-0}"
}

case "${1:-}" in
setup) shift; cmd_setup "$@" ;;
exec) shift; cmd_exec "$@" ;;
info) cmd_info ;;
_stubs) load_env; make_stubs ;; # internal: inside the build root
*) die "usage: torchenv.sh setup|exec CMD...|info" ;;
esac
