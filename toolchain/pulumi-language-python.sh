#!/bin/sh
# Launcher installed by toolchain/bootstrap.sh as `pulumi-language-python`.
#
# The Python language host we can build here is the one from pulumi sdk/v3 3.79.0
# (installed next to this file as pulumi-language-python-sdk379). That host takes
# the Pulumi.yaml option `runtime.options.virtualenv` as a command-line flag,
# while current CLIs only pass the engine address and send the options over
# gRPC, which the old host does not read. The engine starts language hosts in
# the project directory, so read the option from Pulumi.yaml here and pass it on.
here=$(dirname "$0")
host="$here/pulumi-language-python-sdk379"

venv=
for f in Pulumi.yaml Pulumi.yml; do
    if [ -f "$f" ]; then
        # First indented "virtualenv: <path>" line (it only occurs under runtime.options);
        # strip quotes, trailing comments and whitespace.
        venv=$(sed -n 's/^[[:space:]]\{1,\}virtualenv:[[:space:]]*//p' "$f" | head -n 1 |
            sed -e 's/[[:space:]]#.*$//' -e 's/[[:space:]]*$//' -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/")
        break
    fi
done

if [ -n "$venv" ]; then
    exec "$host" -root="$PWD" -virtualenv="$venv" "$@"
fi
exec "$host" "$@"
