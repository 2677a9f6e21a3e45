//! Browser bindings (placeholder until the workbench lands).
