#!/usr/bin/env bash
# Side-by-side benchmark of `vdi` against `qemu-img` (a benchmark, not a test).
#
# Usually run as `cargo xtask bench [ARGS]`, which builds `vdi` in release mode first.
# Everything lives in target/bench/: the generated images, scratch outputs, the samples
# (samples.tsv) and the final table (results.txt). See usage() for the flags and README.md
# ("Benchmark") for what is measured and how to read the table.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<'EOF'
usage: tests/bench/bench.sh [--reps N] [--keep] [--skip-max-map] [--only OPS] [--out-dir DIR]

  --reps N        samples per tool and operation, alternating the tools (default 7);
                  the table shows the minimum and the median. A sample over 30 s is not
                  repeated.
  --keep          keep the generated images (about 11 GB) for the next run; without it
                  they are deleted at the end. A kept image is reused only when the
                  parameters recorded with it match this script's.
  --skip-max-map  skip `qemu-img map` on the maximum-size image (about 70 s a run).
  --only OPS      comma-separated subset of: convert,null,import,vdi,flatten,small,max
                  (small = info/check/map on the 16 GiB image, max = on the maximum one).
  --out-dir DIR   where the convert and import outputs go (default target/bench). On a
                  disk, writing 4 GiB is often bound by the kernel's dirty-page writeback;
                  a tmpfs (/dev/shm) shows the tools' own cost instead.
EOF
}

REPS=7
OUT_DIR=
KEEP=0
SKIP_MAX_MAP=0
ONLY=convert,null,import,vdi,flatten,small,max
while (($#)); do
    case $1 in
        --reps) REPS=${2:?--reps needs a number}; shift ;;
        --keep) KEEP=1 ;;
        --skip-max-map) SKIP_MAX_MAP=1 ;;
        --only) ONLY=${2:?--only needs a list}; shift ;;
        --out-dir) OUT_DIR=${2:?--out-dir needs a folder}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; exit 2 ;;
    esac
    shift
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "bench: --reps must be a positive number" >&2; exit 2; }
wants() { [[ ,$ONLY, == *,$1,* ]]; }
die() { echo "bench: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VDI=${VDI:-$ROOT/target/release/vdi}
DIR=$ROOT/target/bench
mkdir -p "$DIR"
IMG=$DIR/bench.vdi     # 16 GiB dynamic image (generated)
RAW=$DIR/src.raw       # the same disk as a sparse raw file (generated; import source)
MAX=$DIR/max.vdi       # maximum-size image, 2 GiB block map (generated)
DIFF=$DIR/Snapshots/diff.vdi  # an empty differencing image on IMG (made each run)
PARAMS=$DIR/generated.params
OUT_DIR=${OUT_DIR:-$DIR}
[[ -d $OUT_DIR ]] || die "--out-dir $OUT_DIR is not a folder"
OUT_RAW=$OUT_DIR/out.raw   # scratch outputs, deleted before every sample and at exit
OUT_VDI=$OUT_DIR/out.vdi
SAMPLES=$DIR/samples.tsv
RESULTS=$DIR/results.txt
LONG_US=30000000       # a sample longer than this (30 s) is not repeated

# The generated data. Changing any of these (or the generator) makes a kept image stale.
SIZE=$((16 << 30))
DATA_BLOCKS=4096       # 4 GiB of random data in scattered 1 MiB blocks
ZERO_DATA_BLOCKS=256   # allocated blocks holding only zeros
ZERO_ENTRIES=64        # blocks marked ZERO in the map
SEED=1
MAX_BLOCKS=$((0x1FFFFF80))
MAX_SIZE=$((MAX_BLOCKS << 20))


# --- tools -------------------------------------------------------------------------------
apt_install() {
    echo "bench: installing $* with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v qemu-img >/dev/null || apt_install qemu-utils
[[ -x /usr/bin/time ]] || apt_install time
command -v python3 >/dev/null || apt_install python3
[[ -x $VDI ]] || die "$VDI is missing: run \`cargo build -p vdi-cli --release\` (or use \`cargo xtask bench\`)"
QEMU_VERSION=$(qemu-img --version | head -1)

# --- generated images --------------------------------------------------------------------
want_params() {
    echo "generator=1 size=$SIZE data=$DATA_BLOCKS zero_data=$ZERO_DATA_BLOCKS zero_entries=$ZERO_ENTRIES" \
        "seed=$SEED max_blocks=$MAX_BLOCKS gen_sha=$(sha256sum "$ROOT/tests/bench/gen_image.py" | cut -c1-16)"
}

# Free space needed in target/bench, in KiB, for what is missing plus the scratch outputs.
need_space() {
    local kib=$(((DATA_BLOCKS + ZERO_DATA_BLOCKS) * 1024))  # one image's data
    local out=$((kib + kib / 10))                             # out.raw or out.vdi, with slack
    local need=0
    [[ -f $IMG ]] || need=$((need + kib))
    [[ -f $RAW ]] || need=$((need + kib))
    [[ -f $MAX ]] || need=$((need + (MAX_BLOCKS * 4 >> 10)))
    if [[ $(df -P "$OUT_DIR" | awk 'NR == 2 { print $1 }') == $(df -P "$DIR" | awk 'NR == 2 { print $1 }') ]]; then
        need=$((need + out))
    else
        free_kib "$OUT_DIR" "$out"
    fi
    free_kib "$DIR" "$need"
}
free_kib() {
    local avail
    avail=$(df -Pk "$1" | awk 'NR == 2 { print $4 }')
    ((avail > $2)) || die "need $(($2 >> 20)) GiB free in $1, have $((avail >> 20)) GiB"
}

generate() {
    if [[ -f $PARAMS && -f $IMG && -f $RAW && -f $MAX && $(cat "$PARAMS") == "$(want_params)" ]]; then
        echo "bench: reusing the images in $DIR (kept by an earlier --keep run with the same parameters)"
        return
    fi
    rm -f "$PARAMS" "$IMG" "$RAW" "$MAX"
    need_space
    echo "bench: generating $IMG: 16 GiB, $DATA_BLOCKS random + $ZERO_DATA_BLOCKS zero 1 MiB blocks, $ZERO_ENTRIES ZERO entries"
    "$VDI" create "$IMG.tmp" "$SIZE" >/dev/null
    python3 "$ROOT/tests/bench/gen_image.py" "$IMG.tmp" "$DATA_BLOCKS" "$ZERO_DATA_BLOCKS" "$ZERO_ENTRIES" "$SEED"
    qemu-img check -f vdi "$IMG.tmp" >/dev/null || die "qemu-img check does not find the generated image clean"
    mv "$IMG.tmp" "$IMG"
    echo "bench: generating $RAW (qemu-img convert, sparse)"
    qemu-img convert -f vdi -O raw "$IMG" "$RAW.tmp"
    mv "$RAW.tmp" "$RAW"
    echo "bench: generating $MAX (qemu-img create at its largest VDI size, $MAX_SIZE bytes)"
    qemu-img create -f vdi "$MAX.tmp" "$MAX_SIZE" >/dev/null
    mv "$MAX.tmp" "$MAX"
    sync
    want_params >"$PARAMS"
}

cleanup() {
    rm -f "$OUT_RAW" "$OUT_VDI" "$DIR/rss" "$DIR/stderr" "$IMG.tmp" "$RAW.tmp" "$MAX.tmp" "$DIFF"
    if ((!KEEP)); then
        rm -f "$IMG" "$RAW" "$MAX" "$PARAMS"
    fi
}
trap cleanup EXIT

# --- warming the page cache ---------------------------------------------------------------
warm_file() { cat "$1" >/dev/null; }
# The sparse raw file: read only its data (qemu-img skips holes), so its holes do not fill
# the page cache with gigabytes of zero pages.
warm_raw() { qemu-img convert -n -f raw "$RAW" --target-image-opts "driver=null-co,size=$SIZE"; }

# --- the commands ------------------------------------------------------------------------
# cmd OP TOOL sets CMD to the command line (stdout is discarded when timed).
cmd() {
    case $1/$2 in
        convert/vdi) CMD=("$VDI" convert -O raw "$IMG" "$OUT_RAW") ;;
        convert/qemu) CMD=(qemu-img convert -f vdi -O raw "$IMG" "$OUT_RAW") ;;
        convert/qemu-W) CMD=(qemu-img convert -W -m 16 -f vdi -O raw "$IMG" "$OUT_RAW") ;;
        vdi/vdi) CMD=("$VDI" convert -O vdi "$IMG" "$OUT_VDI") ;;
        vdi/qemu) CMD=(qemu-img convert -f vdi -O vdi "$IMG" "$OUT_VDI") ;;
        # The layout qemu-img writes (data not aligned to 1 MiB): the same output shape.
        vdi/vdi-qlayout) CMD=("$VDI" convert -O vdi --layout qemu "$IMG" "$OUT_VDI") ;;
        vdi/qemu-W) CMD=(qemu-img convert -W -m 16 -f vdi -O vdi "$IMG" "$OUT_VDI") ;;
        # qemu-img cannot open a VDI differencing image: vdi alone, against its flat convert.
        flatten/vdi) CMD=("$VDI" convert -O raw "$DIFF" "$OUT_RAW") ;;
        null/vdi) CMD=("$VDI" convert -O raw "$IMG" /dev/null) ;;
        null/qemu) CMD=(qemu-img convert -n -f vdi "$IMG" --target-image-opts "driver=null-co,size=$SIZE") ;;
        # Told that the target reads as zeros, qemu-img skips writing the 12 GiB of holes.
        null/qemu-Z) CMD=(qemu-img convert -n --target-is-zero -f vdi "$IMG" --target-image-opts "driver=null-co,size=$SIZE") ;;
        import/vdi) CMD=("$VDI" convert -O vdi "$RAW" "$OUT_VDI") ;;
        import/qemu) CMD=(qemu-img convert -f raw -O vdi "$RAW" "$OUT_VDI") ;;
        import/vdi-qlayout) CMD=("$VDI" convert -O vdi --layout qemu "$RAW" "$OUT_VDI") ;;
        import/qemu-W) CMD=(qemu-img convert -W -m 16 -f raw -O vdi "$RAW" "$OUT_VDI") ;;
        info/vdi) CMD=("$VDI" info "$IMG") ;;
        info/qemu) CMD=(qemu-img info -f vdi "$IMG") ;;
        check/vdi) CMD=("$VDI" check "$IMG") ;;
        check/qemu) CMD=(qemu-img check -f vdi "$IMG") ;;
        map/vdi) CMD=("$VDI" map "$IMG") ;;
        map/qemu) CMD=(qemu-img map -f vdi "$IMG") ;;
        maxinfo/vdi) CMD=("$VDI" info "$MAX") ;;
        maxinfo/qemu) CMD=(qemu-img info -f vdi "$MAX") ;;
        maxcheck/vdi) CMD=("$VDI" check "$MAX") ;;
        maxcheck/qemu) CMD=(qemu-img check -f vdi "$MAX") ;;
        maxmap/vdi) CMD=("$VDI" map "$MAX") ;;
        maxmap/qemu) CMD=(qemu-img map -f vdi "$MAX") ;;
        *) die "no command for $1/$2" ;;
    esac
}

declare -A BEST
# sample OP TOOL: run once, record wall time, user and kernel CPU time (µs) and peak RSS
# (KiB) as a line of samples.tsv. Wall time is what the targets are about; the CPU split
# says whose time it was (on these VMs, a write-heavy sample's kernel time swings with the
# hypervisor: see docs/benchmarks.md).
sample() {
    local op=$1 tool=$2 t0 t1 rc=0 us rss user sys
    cmd "$op" "$tool"
    rm -f "$OUT_RAW" "$OUT_VDI"
    t0=$EPOCHREALTIME
    /usr/bin/time -f '%M %U %S' -o "$DIR/rss" "${CMD[@]}" >/dev/null 2>"$DIR/stderr" || rc=$?
    t1=$EPOCHREALTIME
    if ((rc)); then
        cat "$DIR/stderr" >&2
        die "$op/$tool failed with exit code $rc: ${CMD[*]}"
    fi
    us=$((10#${t1/./} - 10#${t0/./}))
    read -r rss user sys < <(tail -n 1 "$DIR/rss" | awk '{ printf "%d %d %d\n", $1, $2 * 1e6, $3 * 1e6 }')
    printf '%s\t%s\t%d\t%d\t%d\t%d\n' "$op" "$tool" "$us" "$user" "$sys" "$rss" >>"$SAMPLES"
    if [[ -z ${BEST[$op/$tool]:-} ]] || ((us < ${BEST[$op/$tool]})); then BEST[$op/$tool]=$us; fi
}

# stat OP TOOL: "min median user sys rss n" over the samples: minimum and median wall time,
# median user and kernel CPU time (µs), peak RSS (KiB), number of samples.
stat() {
    awk -F'\t' -v op="$1" -v tool="$2" '
        $1 == op && $2 == tool { n++; w[n] = $3; u[n] = $4; s[n] = $5; if ($6 > r) r = $6 }
        function med(a,   i, j, t) {
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j > 0 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            return n % 2 ? a[(n + 1) / 2] : int((a[n / 2] + a[n / 2 + 1]) / 2)
        }
        END { if (n) { m = med(w); print w[1], m, med(u), med(s), r, n } }' "$SAMPLES"
}

# measure OP TOOL...: REPS rounds, the tools alternating (reversed order every other round).
measure() {
    local op=$1 r tool
    shift
    local tools=("$@")
    echo "bench: $op: ${tools[*]}" >&2
    for ((r = 1; r <= REPS; r++)); do
        local order=("${tools[@]}")
        if ((r % 2 == 0)); then
            order=()
            for tool in "${tools[@]}"; do order=("$tool" "${order[@]}"); done
        fi
        for tool in "${order[@]}"; do
            # One sample is enough for a very slow command (qemu-img map on the max image).
            if ((${BEST[$op/$tool]:-0} > LONG_US)); then continue; fi
            sample "$op" "$tool"
        done
    done
    rm -f "$OUT_RAW" "$OUT_VDI"
}

# --- the table -----------------------------------------------------------------------------
fmt_s() { awk -v us="$1" 'BEGIN { if (us < 1e6) printf "%.1fms", us / 1e3; else printf "%.2fs", us / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else printf "-" }'; }
fmt_mib() { awk -v k="$1" 'BEGIN { printf "%.0fMiB", k / 1024 }'; }
ROWS=()
MISSES=0
ROW_FMT='%-38s %-11s %8s %8s %8s %8s %7s %7s %-15s %-5s'
# cells OP TOOL: "min median user sys rss" formatted, or dashes.
cells() {
    local st
    st=$(stat "$1" "$2")
    if [[ -z $st ]]; then echo "- - - - -"; return; fi
    read -r mn md u s r _ <<<"$st"
    echo "$(fmt_s "$mn") $(fmt_s "$md") $(fmt_s "$u") $(fmt_s "$s") $(fmt_mib "$r")"
}
# row LABEL OP OTHER TARGET [REF]: one line for REF (default vdi) and one for OTHER; TARGET
# is "ratio>=X", "vdi<MS,rss<MIB" or "-" (reported only). The ratio is OTHER's minimum over
# REF's.
row() {
    local label=$1 op=$2 other=$3 target=$4 ref=${5:-vdi}
    local v=${BEST[$op/$ref]:-} q=${BEST[$op/$other]:-}
    [[ -n $v ]] || return 0
    local ratio="-" verdict="-" st vr
    st=$(stat "$op" "$ref")
    vr=$(echo "$st" | awk '{ print $5 }')
    [[ -n $q ]] && ratio=$(ratio "$q" "$v")
    case $target in
        ratio\>=*)
            local want=${target#ratio>=}
            if [[ -n $q ]]; then
                verdict=$(awk -v a="$q" -v b="$v" -v w="$want" 'BEGIN { print (a / b >= w ? "pass" : "MISS") }')
            fi
            target=">=${want}x" ;;
        vdi\<*)
            local ms=${target#vdi<} mib
            mib=${ms#*,rss<}
            ms=${ms%%,*}
            verdict=$(awk -v us="$v" -v k="$vr" -v ms="$ms" -v mib="$mib" \
                'BEGIN { print (us < ms * 1000 && k < mib * 1024 ? "pass" : "MISS") }')
            target="<$(fmt_s $((ms * 1000))),<${mib}MiB" ;;
    esac
    [[ $verdict != MISS ]] || MISSES=$((MISSES + 1))
    # shellcheck disable=SC2046
    ROWS+=("$(printf "$ROW_FMT" "$label" "$ref" $(cells "$op" "$ref") "$ratio" "$target" "$verdict")")
    if [[ $other != - ]]; then
        # shellcheck disable=SC2046
        ROWS+=("$(printf "$ROW_FMT" "" "$other" $(cells "$op" "$other") "" "" "")")
    fi
}

# --- run -----------------------------------------------------------------------------------
need_space
generate
: >"$SAMPLES"
START=$(date '+%F %T')
if wants convert || wants null || wants small; then warm_file "$IMG"; fi
if wants convert; then measure convert vdi qemu qemu-W; fi
if wants null; then measure null vdi qemu qemu-Z; fi
if wants small; then
    measure info vdi qemu
    measure check vdi qemu
    measure map vdi qemu
fi
if wants vdi; then
    warm_file "$IMG"
    measure vdi vdi qemu qemu-W vdi-qlayout
fi
if wants flatten; then
    warm_file "$IMG"
    mkdir -p "$(dirname "$DIFF")"
    "$VDI" create --parent "$IMG" "$DIFF" >/dev/null
    measure flatten vdi
    rm -f "$DIFF"
fi
if wants import; then
    warm_raw
    measure import vdi qemu qemu-W vdi-qlayout
fi
if wants max; then
    warm_file "$MAX"
    measure maxinfo vdi qemu
    measure maxcheck vdi qemu
    if ((SKIP_MAX_MAP)); then measure maxmap vdi; else measure maxmap vdi qemu; fi
fi

row "vdi -> raw file" convert qemu "ratio>=1.5"
row "vdi -> raw file (qemu -W -m 16)" convert qemu-W "ratio>=1.0"
row "read all data (/dev/null, null-co)" null qemu "ratio>=3"
row "read all data (qemu --target-is-zero)" null qemu-Z "-"
row "raw -> vdi" import qemu "-"
row "raw -> vdi (qemu -W -m 16)" import qemu-W "ratio>=1.0"
row "raw -> vdi, qemu's layout (-W -m 16)" import qemu-W "-" vdi-qlayout
row "vdi -> vdi" vdi qemu "-"
row "vdi -> vdi (qemu -W -m 16)" vdi qemu-W "ratio>=1.0"
row "vdi -> vdi, qemu's layout (-W -m 16)" vdi qemu-W "-" vdi-qlayout
row "chain (empty diff) -> raw file" flatten - "-"
row "info (16 GiB image)" info qemu "-"
row "check (16 GiB image)" check qemu "-"
row "map (16 GiB image)" map qemu "-"
row "info (max image, 2 GiB map)" maxinfo qemu "vdi<50,rss<64"
row "check (max image, 2 GiB map)" maxcheck qemu "vdi<2000,rss<64"
row "map (max image, 2 GiB map)" maxmap qemu "vdi<2000,rss<64"

{
    echo "vdi vs qemu-img, $START, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "vdi: $("$VDI" --version) ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); $QEMU_VERSION"
    echo "image: 16 GiB dynamic, $DATA_BLOCKS random + $ZERO_DATA_BLOCKS zero 1 MiB blocks at random positions and" \
        "in random slot order, $ZERO_ENTRIES ZERO entries; max image: $MAX_BLOCKS blocks; $REPS samples each, tools alternated, page cache warm"
    echo "outputs written to $OUT_DIR ($(df -PT "$OUT_DIR" | awk 'NR == 2 { print $2 }'))"
    echo
    printf "$ROW_FMT\n" operation tool min median user sys RSS "ratio" target result
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "min, median: wall time over the samples; user, sys: median CPU time in user space and in the"
    echo "kernel; RSS: peak resident set size; ratio: the other tool's minimum / vdi's minimum (higher is"
    echo "better for vdi). Every sample is in $SAMPLES (op, tool, wall, user, sys µs, RSS KiB)."
} | tee "$RESULTS"
echo "bench: $MISSES target(s) missed; table saved in $RESULTS" >&2
