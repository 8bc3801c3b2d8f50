#!/bin/sh
# berth container entrypoint.
#
# When BERTH_CONFIG_TOML is set (ECS injects it from an SSM parameter or a Secrets Manager
# secret, see deploy/ecs/task-definition.json), its content is written to BERTH_CONFIG_PATH
# (default /run/berth/berth.toml) before the command runs, so the command can point --config at
# it. Then the command replaces this shell (exec), so berth receives SIGTERM directly.
set -eu
if [ -n "${BERTH_CONFIG_TOML:-}" ]; then
    path="${BERTH_CONFIG_PATH:-/run/berth/berth.toml}"
    umask 077
    tmp="$path.tmp.$$"
    printf '%s\n' "$BERTH_CONFIG_TOML" > "$tmp"
    mv -f "$tmp" "$path"
    unset BERTH_CONFIG_TOML
fi
exec "$@"
