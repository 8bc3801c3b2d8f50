#!/bin/sh
# stop-delay.sh: run an application so that ECS can stop its task without losing a request
# behind berth.
#
#   ENTRYPOINT ["/stop-delay.sh", "/app/server", "--port", "8080"]
#
# ECS sends SIGTERM to the task's containers at the moment it marks the task to stop; berth
# learns of it at its next ECS poll (750 ms by default) and stops sending the task new
# requests. An application that exits at once on SIGTERM would drop the requests in flight
# and refuse those sent before berth noticed. This wrapper keeps the application serving for
# BERTH_STOP_DELAY seconds (default 2) after SIGTERM, then passes SIGTERM on and waits for the
# application to exit, returning its exit status. Keep the task definition's stopTimeout above
# BERTH_STOP_DELAY plus the application's own shutdown time.
set -u

delay="${BERTH_STOP_DELAY:-2}"
case "$delay" in
    '' | *[!0-9]*)
        echo "stop-delay.sh: BERTH_STOP_DELAY must be a whole number of seconds, got '$delay'" >&2
        exit 64
        ;;
esac
if [ "$#" -eq 0 ]; then
    echo "stop-delay.sh: usage: stop-delay.sh COMMAND [ARG...]" >&2
    exit 64
fi

"$@" &
child=$!
stopping=0
on_term() {
    [ "$stopping" -eq 1 ] && return
    stopping=1
    sleep "$delay"
    kill -TERM "$child" 2>/dev/null
}
trap on_term TERM INT

# A trapped signal interrupts `wait`; wait again until the application itself has exited.
while :; do
    wait "$child"
    status=$?
    if ! kill -0 "$child" 2>/dev/null; then
        exit "$status"
    fi
done
