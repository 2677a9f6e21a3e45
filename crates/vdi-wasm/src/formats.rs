//! Export of the open disk (an image, or a chain flattened) to another hypervisor's format,
//! in steps the worker awaits between: the engine's [`vdi::FormatExport`] writes the output
//! file's bytes in order into [`Collect`], which the worker then writes to its save target
//! at their offsets (zeros are not written: the target starts as zeros).
//!
//! Memory: one step's output (a run of the disk, at most [`vdi::transfer::CHUNK`] bytes, or
//! a piece of metadata) and the export's read buffer.

use serde_json::json;
use uuid::Uuid;
use vdi::{FormatExport, FormatOptions, RawSink};
use wasm_bindgen::prelude::*;

use crate::session::Session;
use crate::{js_error, no_image, vdi_err};

/// One step's output: data bytes in `buf`, and the pieces `(offset, len, at in buf or -1
/// for zeros)`.
#[derive(Debug, Default)]
pub(crate) struct Collect {
    buf: Vec<u8>,
    pieces: Vec<f64>,
}

impl RawSink for Collect {
    fn data(&mut self, offset: u64, b: &[u8]) -> vdi::Result<()> {
        self.pieces.extend([offset as f64, b.len() as f64, self.buf.len() as f64]);
        self.buf.extend_from_slice(b);
        Ok(())
    }
    fn zeros(&mut self, offset: u64, len: u64) -> vdi::Result<()> {
        self.pieces.extend([offset as f64, len as f64, -1.0]);
        Ok(())
    }
}

/// An export to a format in progress.
#[derive(Debug)]
pub(crate) struct FormatJob {
    export: FormatExport,
    out: Collect,
    read: Vec<u8>,
}

#[wasm_bindgen]
impl Session {
    /// Start exporting the open disk as `format` (`qcow2`, `vmdk`, `vmdk-stream`, `vhd`,
    /// `vhd-fixed`, `vhdx`) into a file named `name`. Returns the plan (JSON): `format`,
    /// `disk-size`, `virtual-size`, `output-length` (null when known only at the end) and
    /// `notes` (what was done to fit the format).
    pub fn format_begin(&mut self, format: &str, name: &str) -> Result<String, JsValue> {
        self.format = None;
        let f = vdi::Format::parse(format)
            .ok_or_else(|| js_error("invalid-argument", format!("unknown format {format:?}: expected {}", vdi::Format::names())))?;
        self.refuse_broken_layout()?;
        let disk = self.disk().ok_or_else(no_image)?;
        let time = (js_sys::Date::now() / 1000.0) as u64;
        let opts = FormatOptions::new([Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()], time, name);
        let export = FormatExport::begin(disk, f, &opts).map_err(vdi_err)?;
        let p = export.plan();
        let plan = json!({
            "format": p.format.name(),
            "disk-size": p.disk_size,
            "virtual-size": p.virtual_size,
            "output-length": p.output_len,
            "notes": p.notes,
        });
        self.format = Some(FormatJob { export, out: Collect::default(), read: vec![0; vdi::transfer::CACHE_PIECE] });
        Ok(plan.to_string())
    }

    /// The next step: `[disk bytes done, output bytes written, (offset, len, at) × pieces]`
    /// (`at` is where a data piece starts in the step's buffer, [`Session::format_buffer_ptr`];
    /// -1 for zeros), or an empty array once the output is complete.
    pub fn format_step(&mut self) -> Result<Vec<f64>, JsValue> {
        let job = self.format.as_mut().ok_or_else(|| js_error("invalid-argument", "no format export in progress"))?;
        job.out.buf.clear();
        job.out.pieces.clear();
        let Some(disk) = self.open.as_mut().map(|o| o.disk()) else { return Err(no_image()) };
        match job.export.step(disk, &mut job.out, &mut job.read) {
            Ok(Some(done)) => {
                let mut v = vec![done as f64, job.export.written() as f64];
                v.extend_from_slice(&job.out.pieces);
                Ok(v)
            }
            Ok(None) => Ok(Vec::new()),
            Err(e) => {
                self.format = None;
                Err(vdi_err(e))
            }
        }
    }

    /// Where the last step's data starts in wasm memory (valid until the next call).
    pub fn format_buffer_ptr(&self) -> usize {
        self.format.as_ref().map_or(0, |j| j.out.buf.as_ptr() as usize)
    }

    /// Abandon the export (or forget a finished one).
    pub fn format_cancel(&mut self) {
        self.format = None;
    }
}
