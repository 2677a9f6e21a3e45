//! `vdi-corpus DIR`: write the damaged-image corpus and its `manifest.json` into DIR
//! (what `cargo xtask corpus DIR` runs). Needs `qemu-img` and `sha256sum`.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: vdi-corpus DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let corpus = vdi_tests::corpus::write(&dir);
    println!(
        "wrote {} damaged images and {} chains to {} (see manifest.json)",
        corpus.cases.len(),
        corpus.chains.len(),
        dir.display()
    );
}
