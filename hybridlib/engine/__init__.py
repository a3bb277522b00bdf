"""The machinery of long runs, built on the teaching core (`hybridlib.train`'s arithmetic).

- `trainer`: resumable, stoppable, distributed runs into run directories (`run_training`,
  `fit`, `evaluate_run`, `load_run_model`);
- `fast`: the eager and the CUDA-graph training step, and several runs in processes;
- `distributed`: torchrun (process group, DDP, reductions over ranks);
- `rundir`: the files of a run directory (checkpoints, locks, summaries, splits);
- `loading`: the data a run trains on (`load_bundle`), each rank's shard of it;
- `cache`: the decoded-image disk cache;
- `system`: RNG-state capture and signal shielding for checkpoints.
"""
