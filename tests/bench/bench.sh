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

  --reps N        samples per tool and operation, alternating the tools (default 3);
                  the table shows the best sample. A sample over 30 s is not repeated.
  --keep          keep the generated images (about 11 GB) for the next run; without it
                  they are deleted at the end. A kept image is reused only when the
                  parameters recorded with it match this script's.
  --skip-max-map  skip `qemu-img map` on the maximum-size image (about 70 s a run).
  --only OPS      comma-separated subset of: convert,null,import,small,max
                  (small = info/check/map on the 16 GiB image, max = on the maximum one).
  --out-dir DIR   where the convert and import outputs go (default target/bench). On a
                  disk, writing 4 GiB is often bound by the kernel's dirty-page writeback;
                  a tmpfs (/dev/shm) shows the tools' own cost instead.
EOF
}

REPS=3
OUT_DIR=
KEEP=0
SKIP_MAX_MAP=0
ONLY=convert,null,import,small,max
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
    rm -f "$OUT_RAW" "$OUT_VDI" "$DIR/rss" "$DIR/stderr" "$IMG.tmp" "$RAW.tmp" "$MAX.tmp"
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
        null/vdi) CMD=("$VDI" convert -O raw "$IMG" /dev/null) ;;
        null/qemu) CMD=(qemu-img convert -n -f vdi "$IMG" --target-image-opts "driver=null-co,size=$SIZE") ;;
        # Told that the target reads as zeros, qemu-img skips writing the 12 GiB of holes.
        null/qemu-Z) CMD=(qemu-img convert -n --target-is-zero -f vdi "$IMG" --target-image-opts "driver=null-co,size=$SIZE") ;;
        import/vdi) CMD=("$VDI" convert -O vdi "$RAW" "$OUT_VDI") ;;
        import/qemu) CMD=(qemu-img convert -f raw -O vdi "$RAW" "$OUT_VDI") ;;
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

declare -A BEST CPU RSS ALL
# sample OP TOOL: run once, record wall time (µs), CPU time (user + system, µs) and peak
# RSS (KiB). Wall time is what the targets are about; CPU time is less sensitive to other
# processes competing for the two cores, so it is shown too.
sample() {
    local op=$1 tool=$2 t0 t1 rc=0 us rss cpu
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
    read -r rss cpu < <(tail -n 1 "$DIR/rss" | awk '{ printf "%d %d\n", $1, ($2 + $3) * 1e6 }')
    printf '%s\t%s\t%d\t%d\t%d\n' "$op" "$tool" "$us" "$cpu" "$rss" >>"$SAMPLES"
    ALL[$op/$tool]+="$(fmt_s "$us") "
    if [[ -z ${BEST[$op/$tool]:-} ]] || ((us < ${BEST[$op/$tool]})); then BEST[$op/$tool]=$us; fi
    if [[ -z ${CPU[$op/$tool]:-} ]] || ((cpu < ${CPU[$op/$tool]})); then CPU[$op/$tool]=$cpu; fi
    if [[ -z ${RSS[$op/$tool]:-} ]] || ((rss > ${RSS[$op/$tool]})); then RSS[$op/$tool]=$rss; fi
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
ROW_FMT='%-38s %9s %9s %7s %8s %8s %-15s %-6s %9s %9s %7s'
# row LABEL OP OTHER TARGET: TARGET is "ratio>=X", "vdi<MS,rss<MIB" or "-" (reported only).
row() {
    local label=$1 op=$2 other=$3 target=$4
    local v=${BEST[$op/vdi]:-} q=${BEST[$op/$other]:-} vr=${RSS[$op/vdi]:-} qr=${RSS[$op/$other]:-}
    local vc=${CPU[$op/vdi]:-} qc=${CPU[$op/$other]:-}
    [[ -n $v ]] || return 0
    local ratio="-" qs="skipped" qm="-" verdict="-" qcs="-" cratio="-"
    if [[ -n $q ]]; then
        ratio=$(ratio "$q" "$v")
        qs=$(fmt_s "$q")
        qm=$(fmt_mib "$qr")
        qcs=$(fmt_s "$qc")
        cratio=$(ratio "$qc" "$vc")
    fi
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
    ROWS+=("$(printf "$ROW_FMT" "$label" "$(fmt_s "$v")" "$qs" "$ratio" "$(fmt_mib "$vr")" "$qm" "$target" \
        "$verdict" "$(fmt_s "$vc")" "$qcs" "$cratio")")
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
if wants import; then
    warm_raw
    measure import vdi qemu
fi
if wants max; then
    warm_file "$MAX"
    measure maxinfo vdi qemu
    measure maxcheck vdi qemu
    if ((SKIP_MAX_MAP)); then measure maxmap vdi; else measure maxmap vdi qemu; fi
fi

row "convert to raw file" convert qemu "ratio>=1.5"
row "convert to raw file (qemu -W -m 16)" convert qemu-W "ratio>=1.0"
row "read all data (/dev/null, null-co)" null qemu "ratio>=3"
row "read all data (qemu --target-is-zero)" null qemu-Z "-"
row "import raw to vdi" import qemu "ratio>=1.2"
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
        "in random slot order, $ZERO_ENTRIES ZERO entries; max image: $MAX_BLOCKS blocks; best of $REPS, page cache warm"
    echo "outputs written to $OUT_DIR ($(df -PT "$OUT_DIR" | awk 'NR == 2 { print $2 }'))"
    echo
    printf "$ROW_FMT\n" operation vdi qemu-img ratio "vdi RSS" "qemu RSS" target result "vdi CPU" "qemu CPU" "ratio"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "vdi, qemu-img: best wall time; ratio = qemu-img time / vdi time (higher is better for vdi);"
    echo "RSS = peak resident set size; CPU = best user + system time, and its ratio (for reference)."
    echo "all samples (seconds):"
    for k in $(printf '%s\n' "${!ALL[@]}" | sort); do printf '  %-14s %s\n' "$k" "${ALL[$k]}"; done
} | tee "$RESULTS"
echo "bench: $MISSES target(s) missed; table saved in $RESULTS" >&2
