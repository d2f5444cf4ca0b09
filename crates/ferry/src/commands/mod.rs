//! One function per subcommand: `export` (and `lock`, `export --from`),
//! `verify` (and `inspect`), `import`, `archives`, `prune`, `serve`, `key`,
//! `images`.

mod archives;
mod export;
mod images;
mod import;
mod key;
mod prune;
mod serve;
mod verify;

use std::sync::Arc;

use crate::cli::Command;
use crate::ui::Ui;
use crate::CmdResult;

pub async fn run(command: Command, ui: &Arc<Ui>) -> CmdResult {
    match command {
        Command::Export(a) => export::export(a, ui).await,
        Command::Lock(a) => export::lock(a, ui).await,
        Command::Verify(a) => verify::verify(a, ui).await,
        Command::Inspect(a) => verify::inspect(a, ui).await,
        Command::Import(a) => import::import(*a, ui).await,
        Command::Serve(a) => serve::serve(a, ui).await,
        Command::Images(a) => images::images(a, ui).await,
        Command::Key(a) => key::key(a, ui).await,
        Command::Prune(a) => prune::prune(a, ui).await,
    }
}
