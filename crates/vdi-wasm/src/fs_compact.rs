//! Filesystem-aware compaction of the open image, for the Edit view: a preview (what each
//! partition's filesystem calls free and what would come back; reads only, so it works on
//! a dropped file too) and the compaction itself on an editable copy.

use js_sys::Function;
use vdi::volume::free_json::{free_plan_json, fs_compact_json};
use vdi::volume::FreePlan;
use wasm_bindgen::prelude::*;

use crate::edit::monitor;
use crate::{vdi_err, Session};

#[wasm_bindgen]
impl Session {
    /// What a filesystem-aware compaction would release, per partition:
    /// [`vdi::volume::free_json::free_plan_json`] as JSON text. Writes nothing.
    pub fn fs_free_plan(&mut self) -> Result<String, JsValue> {
        let name = self.name();
        let img = self.image_for("a filesystem-aware compaction")?;
        let plan = FreePlan::scan(img).map_err(vdi_err)?;
        let mut v = free_plan_json(&plan, img.header().block_stride());
        v["filename"] = name.into();
        v["dry-run"] = true.into();
        v["refused"] = plan.refusal().map(|e| e.to_string()).into();
        Ok(v.to_string())
    }

    /// Release what the filesystems call free, then compact
    /// ([`vdi::VdiImage::compact_fs_aware`]); returns
    /// [`vdi::volume::free_json::fs_compact_json`] as JSON text.
    pub fn compact_fs_aware(&mut self, progress: &Function, cancelled: &Function) -> Result<String, JsValue> {
        let name = self.name();
        let img = self.writable_img()?;
        let mut mon = monitor(progress, Some(cancelled));
        let r = img.compact_fs_aware(&mut mon);
        img.flush().map_err(vdi_err)?;
        let st = r.map_err(vdi_err)?;
        Ok(fs_compact_json(&st, img.header().block_stride(), &name).to_string())
    }
}
