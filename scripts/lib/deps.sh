# Installs what the tests need when it is missing: the Node packages from their
# committed lock files, and tools from Debian (as root). Sourced by scripts/test
# and scripts/chaos, from the repository's root.

# need_debian PATH PACKAGE: installs PACKAGE unless PATH is executable.
need_debian() {
  local path="$1" package="$2"
  if [ -x "$path" ]; then
    return
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "$path is missing: run 'apt-get update && apt-get install -y $package' as root" >&2
    exit 1
  fi
  if [ -z "${HAKKEN_APT_UPDATED:-}" ]; then
    apt-get update -qq
    HAKKEN_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package"
}

# need_npm DIR PACKAGE: runs `npm ci` in DIR unless DIR/node_modules/PACKAGE exists.
need_npm() {
  local dir="$1" package="$2"
  if [ ! -d "$dir/node_modules/$package" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
}
