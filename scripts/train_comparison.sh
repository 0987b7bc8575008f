#!/usr/bin/env bash
# Train the DCFB 3D model, its 2D variant and the three ablations at one budget (same data, epochs,
# steps, learning rate and schedule), JOBS at a time on one thread each, and export each checkpoint to
# TorchScript for scripts/fusion_eval.py compare. Each run leaves OUT/<name>/{model.pt,model.ts,train.log,seconds}.
#   EPOCHS=6 LR=0.0002 JOBS=2 VAL_INTERVAL=2 SEED=123 OUT=runs/comparison DATA=data/cohort scripts/train_comparison.sh [name ...]
# names: dcfb_3d dcfb_2d dcfb_2d_3d_loss no_cross_attention zero_offsets shared_encoder (default: these six), and
# instance_norm / channel_norm (the released network normalises nothing; these put instance or per-voxel channel
# normalisation back, for the comparison in docs/report.md).
# dcfb_2d trains on batches of axial slices with the 2D form of the loss (train_2d.json); dcfb_2d_3d_loss runs
# the same 2D network on every axial slice of the 3D model's patches, with the 3D model's loss
# (train_2d_3d_loss.json), and exports as a 3D-in, 3D-out module.
# PRETRAINED=dir starts each run from dir/<name>/model.pt (a second stage); TRAIN_ARGS adds bundle CLI arguments
# to every run, e.g. TRAIN_ARGS="--loss#vif_weights [0,0]"; EXTRA_CONFIG adds a config file over train.json, e.g.
# EXTRA_CONFIG=bundle/configs/train_distill.json TRAIN_ARGS="--distill_teachers {0.5:'runs/fixed05/model.ts'}"
# (distillation of fixed-lambda networks); THREADS sets each run's torch threads (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
export EPOCHS=${EPOCHS:-6} LR=${LR:-0.0002} OUT=${OUT:-runs/comparison} DATA=${DATA:-data/cohort} PY ROOT
export VAL_INTERVAL=${VAL_INTERVAL:-2} SEED=${SEED:-123} PRETRAINED=${PRETRAINED:-} TRAIN_ARGS=${TRAIN_ARGS:-}
export EXTRA_CONFIG=${EXTRA_CONFIG:-} THREADS=${THREADS:-1}
JOBS=${JOBS:-2}
[ -f "$DATA/datalist.json" ] || { echo "train_comparison: no datalist.json in $DATA (scripts/generate_cohort.py makes one)" >&2; exit 2; }

train_one() {
    local name=$1 configs="['bundle/configs/train.json']" export_configs="configs/inference.json" overrides=()
    # every run here is the lambda-conditioned network alone (the first stage of the release weights, and the
    # comparisons): no anchor decoders, in training and in the export
    local conditioned=(--network_def#anchor_pet_emphasis "[]")
    case $name in
        dcfb_3d) ;;
        dcfb_2d) configs="['bundle/configs/train.json','bundle/configs/train_2d.json']"
                 overrides=(--network_def#spatial_dims 2) ;;
        dcfb_2d_3d_loss) configs="['bundle/configs/train.json','bundle/configs/train_2d_3d_loss.json']"
                         conditioned=()  # its network_def is the slice-wise wrapper, whose 2D network has no anchors
                         export_configs="['configs/inference.json','configs/train_2d_3d_loss.json']" ;;
        no_cross_attention) overrides=(--network_def#cross_attention False) ;;
        zero_offsets) overrides=(--network_def#max_offset 0.0) ;;
        shared_encoder) overrides=(--network_def#shared_encoder True) ;;
        instance_norm) overrides=(--network_def#norm INSTANCE) ;;
        channel_norm) overrides=(--network_def#norm CHANNEL) ;;
        *) echo "train_comparison: unknown run '$name'" >&2; return 2 ;;
    esac
    local dir=$OUT/$name start extra=()
    # read, not word splitting: a bracketed list such as [0,0] must not be taken for a file pattern
    read -r -a extra <<< "$TRAIN_ARGS"
    if [ -n "$PRETRAINED" ]; then
        [ -f "$PRETRAINED/$name/model.pt" ] || { echo "train_comparison: no $PRETRAINED/$name/model.pt" >&2; return 2; }
        extra+=(--pretrained_ckpt "$PRETRAINED/$name/model.pt")
    fi
    [ -z "$EXTRA_CONFIG" ] || configs="${configs%]},'$EXTRA_CONFIG']"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)  # absolute: the export below runs from bundle/
    start=$(date +%s)
    echo "train_comparison: $name started (log: $dir/train.log)"
    OMP_NUM_THREADS=$THREADS "$PY" -m monai.bundle run training --config_file "$configs" --dataset_dir "$DATA" \
        --max_epochs "$EPOCHS" --val_interval "$VAL_INTERVAL" --learning_rate "$LR" --seed "$SEED" --ckpt_dir "$dir" \
        --output_dir "$dir/eval" "${conditioned[@]}" "${overrides[@]}" "${extra[@]}" > "$dir/train.log" 2>&1
    echo $(( $(date +%s) - start )) > "$dir/seconds"
    (cd bundle && PYTHONPATH=. OMP_NUM_THREADS=1 "$PY" -m monai.bundle ckpt_export network_def \
        --filepath "$dir/model.ts" --ckpt_file "$dir/model.pt" --meta_file configs/metadata.json \
        --config_file "$export_configs" "${conditioned[@]}" "${overrides[@]}" > "$dir/export.log" 2>&1)
    echo "train_comparison: $name done in $(cat "$dir/seconds") s"
}
export -f train_one

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(dcfb_3d dcfb_2d dcfb_2d_3d_loss no_cross_attention zero_offsets shared_encoder)
printf '%s\n' "${names[@]}" | xargs -P "$JOBS" -I{} bash -c 'set -euo pipefail; train_one {}'
