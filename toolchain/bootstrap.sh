#!/usr/bin/env bash
# Provides the Pulumi toolchain this project deploys with, building it from Go
# modules when no Pulumi CLI is installed (no Pulumi installer or binary can be
# downloaded on our machines). See toolchain/README.md.
#
#   bin=$(toolchain/bootstrap.sh | tail -n 1) && export PATH="$bin:$PATH"
#   sdkgen=$(toolchain/bootstrap.sh --sdkgen | tail -n 1)    # the SDK generator (see toolchain/README.md)
#
# The LAST line on stdout is the absolute path of the directory holding `pulumi`;
# all progress goes to stderr. Builds go to a per-version cache directory
#   ${XDG_CACHE_HOME:-$HOME/.cache}/llmemory-db-toolchain/<key>/
# and are reused on later runs. The postgresql resource plugin is installed into
# ${PULUMI_HOME:-$HOME/.pulumi}/plugins when it is not there yet.
#
# Environment:
#   TOOLCHAIN_IGNORE_PATH_PULUMI=1  build/use our own CLI even if `pulumi` is on PATH.
set -euo pipefail

t0=$(date +%s)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

log() { printf '[toolchain] %s\n' "$*" >&2; }
die() { printf '[toolchain] ERROR: %s\n' "$*" >&2; exit 1; }
finish() { # $1 = bin dir
    log "toolchain ready in $(( $(date +%s) - t0 ))s: $1"
    printf '%s\n' "$1"
    exit 0
}

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/llmemory-db-toolchain"
pulumi_home="${PULUMI_HOME:-$HOME/.pulumi}"
plugin_dir="$pulumi_home/plugins/resource-postgresql-v${POSTGRESQL_PLUGIN_VERSION}"

cli_mod="$here/modules/pulumi-cli"
lh_mod="$here/modules/pulumi-language-python"
yaml_mod="$here/modules/pulumi-language-yaml"
sdkgen_mod="$here/sdkgen"
pg_mod="$here/postgresql-provider"

# Every input of the build goes into the cache key, so editing a pin or a go.mod
# builds into a fresh directory instead of reusing a stale one.
fingerprint=$(cat "$here/versions.env" "$here/pulumi-language-python.sh" \
    "$cli_mod"/go.mod "$cli_mod"/go.sum "$cli_mod"/*.go \
    "$lh_mod"/go.mod "$lh_mod"/go.sum "$lh_mod"/*.go \
    "$yaml_mod"/go.mod "$yaml_mod"/go.sum "$yaml_mod"/*.go \
    "$pg_mod"/go.mod "$pg_mod"/go.sum "$pg_mod"/*.go | sha256sum | cut -c1-12)
key="pulumi-v${PULUMI_CLI_VERSION}_py-sdk${PULUMI_LANGUAGE_PYTHON_SDK_VERSION}_yaml-v${PULUMI_YAML_VERSION}_postgresql-v${POSTGRESQL_PLUGIN_VERSION}_${fingerprint}"
root="$cache_root/$key"
bin="$root/bin"
plugin_bin="$root/plugins/pulumi-resource-postgresql"

bin_files=(pulumi pulumi-language-python pulumi-language-python-sdk379
    pulumi-language-python-exec pulumi-resource-pulumi-python pulumi-language-yaml)

# Go's default install location is often not on PATH in non-login shells.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    PATH="$PATH:/usr/local/go/bin"
fi
have_go() { command -v go >/dev/null 2>&1; }

# --- building ---------------------------------------------------------------

check_go() {
    have_go || die "Go is needed to build the Pulumi toolchain but 'go' is not on PATH."
    local have need=1.26.6
    have=$(go env GOVERSION); have=${have#go}
    if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
        die "Go >= $need is needed to build the Pulumi toolchain (found go$have)."
    fi
}

# The go.mod files are the real pins; make sure versions.env tells the same story.
check_pins() {
    local f="$1" line
    shift
    for line in "$@"; do
        grep -qF -- "$line" "$f" || die "$f does not contain '$line' (out of sync with versions.env)"
    done
}

# run_go_build <name> <module dir> <output> <package> <ldflags>
run_go_build() {
    local name="$1" src="$2" out="$3" pkg="$4" ldflags="$5"
    local dir="$root/build/$name" start pid rc
    rm -rf "$dir"
    mkdir -p "$dir" "$(dirname "$out")"
    cp "$src"/go.mod "$src"/go.sum "$src"/*.go "$dir"/
    start=$(date +%s)
    (
        cd "$dir"
        export GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0
        go build -trimpath -tags "osusergo grpcnotrace" -ldflags "-s -w $ldflags" \
            -o "$out.tmp" "$pkg"
    ) >"$dir/build.log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        if kill -0 "$pid" 2>/dev/null && [ $(( ($(date +%s) - start) % 60 )) -lt 5 ]; then
            log "  ... still building $name ($(( $(date +%s) - start ))s)"
        fi
    done
    rc=0
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$dir/build.log" >&2
        die "building $name failed (exit $rc); full log: $dir/build.log"
    fi
    mv -f "$out.tmp" "$out"
    log "  built $name in $(( $(date +%s) - start ))s"
}

build_plugin() {
    [ -x "$plugin_bin" ] && return 0
    check_go
    check_pins "$pg_mod/go.mod" \
        "github.com/pulumi/pulumi-terraform-bridge/v3 v${PULUMI_TERRAFORM_BRIDGE_VERSION}" \
        "github.com/cyrilgdn/terraform-provider-postgresql v${TERRAFORM_PROVIDER_POSTGRESQL_VERSION}" \
        "github.com/pulumi/terraform-plugin-sdk/v2 ${PULUMI_TERRAFORM_PLUGIN_SDK_VERSION}"
    log "building postgresql resource plugin v${POSTGRESQL_PLUGIN_VERSION} (bridge v${PULUMI_TERRAFORM_BRIDGE_VERSION}, terraform-provider-postgresql v${TERRAFORM_PROVIDER_POSTGRESQL_VERSION}; a few minutes the first time)..."
    run_go_build postgresql-provider "$pg_mod" "$plugin_bin" . \
        "-X main.version=${POSTGRESQL_PLUGIN_VERSION}"
}

build_own_toolchain() {
    check_go
    check_pins "$cli_mod/go.mod" \
        "github.com/pulumi/pulumi/pkg/v3 v${PULUMI_CLI_VERSION}" \
        "github.com/pulumi/pulumi/sdk/v3 v${PULUMI_CLI_VERSION}"
    check_pins "$lh_mod/go.mod" "github.com/pulumi/pulumi/sdk/v3 v${PULUMI_LANGUAGE_PYTHON_SDK_VERSION}"
    check_pins "$yaml_mod/go.mod" "github.com/pulumi/pulumi-yaml v${PULUMI_YAML_VERSION}"
    mkdir -p "$bin"

    if [ ! -x "$bin/pulumi" ]; then
        log "building pulumi CLI v${PULUMI_CLI_VERSION} (takes several minutes the first time)..."
        run_go_build pulumi-cli "$cli_mod" "$bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
            "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v${PULUMI_CLI_VERSION}"
    fi

    if [ ! -x "$bin/pulumi-language-python-sdk379" ]; then
        log "building Python language host (pulumi sdk/v3 v${PULUMI_LANGUAGE_PYTHON_SDK_VERSION})..."
        run_go_build pulumi-language-python "$lh_mod" "$bin/pulumi-language-python-sdk379" \
            github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python \
            "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v${PULUMI_LANGUAGE_PYTHON_SDK_VERSION}"
    fi
    install -m 0755 "$here/pulumi-language-python.sh" "$bin/pulumi-language-python"

    if [ ! -x "$bin/pulumi-language-yaml" ]; then
        log "building YAML language host (pulumi-yaml v${PULUMI_YAML_VERSION}; a few minutes the first time)..."
        run_go_build pulumi-language-yaml "$yaml_mod" "$bin/pulumi-language-yaml" \
            github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml \
            "-X github.com/pulumi/pulumi-yaml/pkg/version.Version=v${PULUMI_YAML_VERSION}"
    fi

    if [ ! -x "$bin/pulumi-language-python-exec" ] || [ ! -x "$bin/pulumi-resource-pulumi-python" ]; then
        local sdk_dir
        log "fetching Python helper scripts from pulumi sdk/v3 v${PULUMI_PYTHON_SCRIPTS_SDK_VERSION}..."
        sdk_dir=$(cd "$root" && GOTOOLCHAIN=local GOFLAGS= go mod download -json \
            "github.com/pulumi/pulumi/sdk/v3@v${PULUMI_PYTHON_SCRIPTS_SDK_VERSION}" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
        [ -n "$sdk_dir" ] && [ -d "$sdk_dir/python" ] ||
            die "could not download github.com/pulumi/pulumi/sdk/v3@v${PULUMI_PYTHON_SCRIPTS_SDK_VERSION}"
        install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$bin/pulumi-language-python-exec"
        install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$bin/pulumi-resource-pulumi-python"
    fi

    build_plugin
    : >"$root/.complete"
}

toolchain_complete() {
    [ -f "$root/.complete" ] && [ -x "$plugin_bin" ] || return 1
    local f
    for f in "${bin_files[@]}"; do [ -x "$bin/$f" ] || return 1; done
}

# install_plugin <pulumi executable>: make postgresql v$POSTGRESQL_PLUGIN_VERSION available
# to the engine. (A pulumi-resource-postgresql on PATH would also be used, as an
# "ambient" plugin, but with a warning on every run; the plugin cache avoids that.)
install_plugin() {
    [ -x "$plugin_dir/pulumi-resource-postgresql" ] && return 0
    log "installing resource plugin postgresql v${POSTGRESQL_PLUGIN_VERSION} into $pulumi_home/plugins"
    PULUMI_SKIP_UPDATE_CHECK=1 "$1" plugin install resource postgresql "${POSTGRESQL_PLUGIN_VERSION}" \
        --file "$plugin_bin" >&2 ||
        die "'pulumi plugin install resource postgresql ${POSTGRESQL_PLUGIN_VERSION} --file $plugin_bin' failed"
}

# Serialise builds of the same key; the lock is held (fd 9) until the script exits.
take_lock() {
    mkdir -p "$cache_root"
    command -v flock >/dev/null 2>&1 || return 0
    exec 9>"$cache_root/.lock-$key"
    if ! flock -n 9; then
        log "waiting for another bootstrap.sh to finish building..."
        flock 9
    fi
}

# sdkgen: Pulumi's own SDK generators (pkg/v3 codegen at the CLI's version) in a small command that needs no
# language host; its own cache directory (not part of the toolchain's key), built with the same pinned modules.
build_sdkgen() {
    local fp
    fp=$(cat "$sdkgen_mod"/go.mod "$sdkgen_mod"/go.sum "$sdkgen_mod"/*.go | sha256sum | cut -c1-12)
    key="sdkgen-v${PULUMI_CLI_VERSION}_${fp}"
    root="$cache_root/$key"
    if [ ! -x "$root/bin/sdkgen" ]; then
        check_go
        check_pins "$sdkgen_mod/go.mod" "github.com/pulumi/pulumi/pkg/v3 v${PULUMI_CLI_VERSION}"
        take_lock
        if [ ! -x "$root/bin/sdkgen" ]; then
            log "building sdkgen (SDK generator, pulumi pkg/v3 v${PULUMI_CLI_VERSION} codegen) into $root..."
            run_go_build sdkgen "$sdkgen_mod" "$root/bin/sdkgen" . ""
        fi
    fi
    log "sdkgen ready in $(( $(date +%s) - t0 ))s: $root/bin/sdkgen"
    printf '%s\n' "$root/bin/sdkgen"
}

# The whole flow lives in a function so that bash has parsed all of it before
# anything runs (editing this file during a long build cannot derail that build).
main() {
    if [ "${1:-}" = "--sdkgen" ]; then
        build_sdkgen
        exit 0
    fi

    # --- 1. a Pulumi CLI that is already installed --------------------------------

    if [ "${TOOLCHAIN_IGNORE_PATH_PULUMI:-}" != 1 ] && path_pulumi=$(command -v pulumi 2>/dev/null); then
        path_bin=$(cd "$(dirname "$path_pulumi")" && pwd -P)
        cache_real=$(mkdir -p "$cache_root" && cd "$cache_root" && pwd -P)
        case "$path_bin/" in
        "$cache_real"/*) ;; # one of ours (an earlier run's PATH): handled below
        *)
            log "using installed pulumi: $path_pulumi ($("$path_pulumi" version 2>/dev/null || echo 'unknown version'))"
            if [ ! -x "$plugin_dir/pulumi-resource-postgresql" ]; then
                if [ -x "$plugin_bin" ] || have_go; then
                    take_lock
                    build_plugin
                    install_plugin "$path_pulumi"
                else
                    log "WARNING: resource plugin postgresql v${POSTGRESQL_PLUGIN_VERSION} is not in $pulumi_home/plugins and"
                    log "         Go is not installed to build it; pulumi will try to download it (needs internet)."
                fi
            fi
            finish "$path_bin"
            ;;
        esac
    fi

    # --- 2. our own build, cached -------------------------------------------------

    if toolchain_complete; then
        install_plugin "$bin/pulumi"
        finish "$bin"
    fi

    if ! have_go; then
        die "Neither the Pulumi CLI nor Go is installed. Install the Pulumi CLI (https://www.pulumi.com/docs/install/), or Go >= 1.26.6 (https://go.dev/dl/) so that this script can build it."
    fi

    log "building the Pulumi toolchain into $root"
    take_lock
    toolchain_complete || build_own_toolchain
    install_plugin "$bin/pulumi"
    finish "$bin"
}

main "$@"
