#!/bin/sh
# Entrypoint of the sbt-batch image: `IMAGE selfcheck` runs `sbt-batch selfcheck`, while a first
# argument that is a program (`IMAGE sbt-batch ...`, `IMAGE bash`, `IMAGE mpirun ...`) runs that program.
set -e
is_program() {
    case $1 in
        */*) [ -f "$1" ] && [ -x "$1" ]; return ;;
    esac
    old_ifs=$IFS
    IFS=:
    for dir in $PATH; do
        if [ -f "$dir/$1" ] && [ -x "$dir/$1" ]; then IFS=$old_ifs; return 0; fi
    done
    IFS=$old_ifs
    return 1
}
if [ $# -gt 0 ] && is_program "$1"; then
    exec "$@"
fi
exec sbt-batch "$@"
