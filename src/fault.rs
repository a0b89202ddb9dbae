//! Test-only fault injection. Built with the `fault-injection` feature,
//! `BANGER_FAULT=<stage>` aborts the process right after that stage, as a
//! crash or `kill -9` would; without the feature this compiles to nothing.
//! Stages are the `--timings` stages of create and start (`allocate`,
//! `disks`, `root disk`, `tap`, `spawn`, `configure`, `sidecar`, `ready`)
//! and `disks:files` (both disk files made, the creation not yet
//! recorded), `stop:vmm`, `stop:teardown`, `delete:stop`, `delete:files`,
//! `image:commit`, and `commit:staged` (an image commit's files staged,
//! nothing moved into place yet).

/// Aborts here if `BANGER_FAULT` names `stage` (fault-injection builds only).
pub fn point(stage: &str) {
    #[cfg(feature = "fault-injection")]
    if crate::env::Env::get().fault.as_deref() == Some(stage) {
        eprintln!("banger: injected fault after stage {stage:?}");
        std::process::abort();
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = stage;
}
