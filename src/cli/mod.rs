//! The command-line interface: flag definitions (`flags`), the commands that turn resolved
//! flags into library calls (`commands`), text rendering of `models inspect`
//! (`inspect_text`) and the generated CLI reference (`reference`).

mod commands;
mod flags;
mod inspect_text;
#[cfg(test)]
mod reference;

pub use commands::run;
pub use flags::*;
