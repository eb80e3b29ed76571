// SPDX-License-Identifier: Apache-2.0
//! `cargo xtask`: build tasks that need more than cargo (see `cargo xtask --help`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "kldnet build tasks")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build release binaries, then the .deb and .rpm into target/dist/.
    Dist {
        /// Package the binaries already in this dir instead of running `cargo build --release`.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Output dir (default: target/dist).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the .deb.
        #[arg(long)]
        no_rpm: bool,
    },
    /// Write the man pages (kldnetd.8, kldnet.8, kldnet-kube-adapter.8) into DIR, uncompressed.
    Man { out: PathBuf },
    /// Write bash, zsh and fish completions for kldnet and kldnetd into DIR.
    Completions { out: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Dist {
            bin_dir,
            out,
            no_rpm,
        } => {
            let built = xtask::dist::dist(&xtask::dist::Options {
                bin_dir,
                out,
                rpm: !no_rpm,
            })?;
            for p in built {
                println!("{}", p.display());
            }
        }
        Command::Man { out } => {
            std::fs::create_dir_all(&out)?;
            for (name, text) in xtask::docs::man_pages(xtask::version(), None)? {
                std::fs::write(out.join(name), text)?;
            }
        }
        Command::Completions { out } => {
            std::fs::create_dir_all(&out)?;
            for c in xtask::docs::completions()? {
                std::fs::write(out.join(&c.file_name), &c.text)?;
            }
        }
    }
    Ok(())
}
