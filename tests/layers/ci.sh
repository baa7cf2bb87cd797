#!/usr/bin/env bash
# The layers of lib/ (docs/architecture.md), checked on the includes: a file
# may include lib/ headers of the layers below its own, and its own header,
# nothing above and nothing beside. A new file in lib/ gets its layer here.
#   0 base      util internal data mpread alloc errors names plugins clock
#               codec def
#   1 instance  instance
#   2 below the engine: machine gcommit relay (none uses another)
#   3 batch     batch (instance, and relay's saga__outmsg)
#   4 engine / participant: engine_int.h and participant_int.h
# usage: bash tests/layers/ci.sh   (from the repo root; exits 1 on a breach)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root/lib" || exit 1

declare -A layer=(
    [util]=0 [internal]=0 [data]=0 [mpread]=0 [alloc]=0 [errors]=0
    [names]=0 [plugins]=0 [clock]=0 [codec]=0 [def]=0
    [instance]=1
    [machine]=2 [gcommit]=2 [relay]=2
    [batch]=3
    [engine_int]=4 [participant_int]=4
)
# Engine-layer and participant files: layer 4 (they may include anything
# below; engine_int.h and participant_int.h are theirs).
for f in engine commit verbs remote query admin metrics own trace testing \
    participant participant_defer participant_keep participant_msg participant_pipe; do
    layer[$f]=4
done

bad=0
for f in *.c *.h; do
    base=${f%.*}
    me=${layer[$base]:-}
    if [ -z "$me" ]; then
        echo "check-layers: lib/$f has no layer (add it to tests/layers/ci.sh)"
        bad=$((bad + 1))
        continue
    fi
    while read -r inc; do
        h=${inc%.h}
        [ "$h" = "$base" ] && continue # its own header
        hl=${layer[$h]:-}
        if [ -z "$hl" ]; then
            echo "check-layers: lib/$f includes \"$inc\", which has no layer"
            bad=$((bad + 1))
        elif [ "$me" -lt 4 ] && [ "$hl" -ge "$me" ] && [ "$me" -gt 0 ]; then
            echo "check-layers: lib/$f (layer $me) includes \"$inc\" (layer $hl)"
            bad=$((bad + 1))
        elif [ "$me" -eq 0 ] && [ "$hl" -gt 0 ]; then
            echo "check-layers: lib/$f (layer 0) includes \"$inc\" (layer $hl)"
            bad=$((bad + 1))
        fi
    done < <(sed -n 's/^#include "\([a-z_]*\.h\)"$/\1/p' "$f")
done
# Below the engine, nothing names the engine or a participant.
if grep -ln 'saga_engine \*\|saga_participant \*' \
    util.c instance.c machine.c gcommit.c relay.c batch.c batch.h \
    instance.h machine.h gcommit.h relay.h 2>/dev/null | grep -q .; then
    grep -n 'saga_engine \*\|saga_participant \*' \
        util.c instance.c machine.c gcommit.c relay.c batch.c batch.h \
        instance.h machine.h gcommit.h relay.h | sed 's/^/check-layers: /'
    bad=$((bad + 1))
fi
if [ "$bad" -gt 0 ]; then
    echo "check-layers: $bad breach(es) of the layers in docs/architecture.md"
    exit 1
fi
echo "check-layers: every lib/ file includes only the layers below it"
