//! Generates the Rust bindings of the Cap'n Proto schema with the system `capnp` compiler
//! (Debian's `capnproto`, installed by `ops/setup`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["common", "messages", "coordinator", "signer"];
    let mut command = capnpc::CompilerCommand::new();
    command
        .src_prefix("capnp")
        .default_parent_module(vec!["generated".into()]);
    for file in files {
        let path = format!("capnp/{file}.capnp");
        println!("cargo:rerun-if-changed={path}");
        command.file(path);
    }
    command.run()?;
    Ok(())
}
