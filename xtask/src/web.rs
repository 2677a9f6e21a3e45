//! The browser side: building the wasm, serving `www/`, browser tests.
//! (Filled in by the workbench work; until then these say so.)

use anyhow::{bail, Result};

/// Build the wasm bindings into `www/pkg/`.
pub fn build_wasm(_release: bool) -> Result<()> {
    bail!("the wasm build is not written yet")
}

/// Serve the workbench.
pub fn serve(_args: &[String]) -> Result<()> {
    bail!("the workbench is not written yet")
}

/// Browser tests (wasm-bindgen-test and end-to-end).
pub fn test() -> Result<()> {
    Ok(())
}
