//! The README's Rust snippet is `examples/quickstart.rs`, word for word, so the snippet a
//! reader copies is one that compiles (`cargo test` builds the examples).

#[test]
fn the_readme_snippet_is_the_compiled_quickstart_example() {
    let readme = include_str!("../../../README.md");
    let example = include_str!("../examples/quickstart.rs");
    let start = readme
        .find("```rust\n")
        .expect("a ```rust block in the README")
        + "```rust\n".len();
    let len = readme[start..].find("```").expect("the block ends");
    assert_eq!(
        &readme[start..start + len],
        example,
        "README.md's ```rust block must be crates/client/examples/quickstart.rs as it is"
    );
}
