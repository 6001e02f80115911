//! `wrong-world`: a valid WebAssembly component that is not a Sluice plugin.
//!
//! It implements an unrelated world (`test:other/other`, exporting `run`)
//! and no `sluice:plugin/processor`, so the engine must refuse to load it as
//! a stage, with a message saying it is not a `sluice:plugin/stage`
//! component.

wit_bindgen::generate!({
    inline: "
        package test:other;

        world other {
            export run: func() -> u32;
        }
    ",
    world: "other",
});

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
