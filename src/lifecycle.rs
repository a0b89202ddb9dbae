//! VM lifecycle shared by commands: reconcile, start runtime, tear down.
