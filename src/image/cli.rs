//! `outpost image ...`: the store from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use super::build::ArchiveFormat;
use super::pull::{self, PullOptions};
use super::reference::display_parts;
use super::{busybox, store_dir, ImageStore};

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Directory for outpost's state; images are kept in DIR/images.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/outpost",
        env = "OUTPOST_STATE",
        global = true
    )]
    pub state: PathBuf,
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import image tarballs: `docker save` or OCI archives, plain, gzip or zstd.
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Pull an image from a registry for this host's platform.
    ///
    /// Credentials come from docker config.json files (`auths.<host>.auth`), by default
    /// DIR/auth.json then /root/.docker/config.json. Loopback registries use plain http.
    Pull {
        #[arg(value_name = "REF")]
        reference: String,
        /// A docker config.json with registry credentials (repeatable; replaces the defaults).
        #[arg(long, value_name = "FILE")]
        auth_file: Vec<PathBuf>,
        /// A registry (host or host:port) to reach over plain http (repeatable).
        #[arg(long, value_name = "HOST")]
        insecure_registry: Vec<String>,
        /// A PEM file of CA certificates to trust besides the built-in roots (repeatable).
        #[arg(long, value_name = "FILE")]
        ca_file: Vec<PathBuf>,
        /// Seconds to wait for a connection, a response, or the next piece of a download.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
    /// List images (REPOSITORY, TAG, IMAGE ID, SIZE).
    Ls,
    /// Remove image references (by name, or all names of an image by sha256: digest).
    ///
    /// The content is freed by the agent's image garbage collection, which knows which
    /// images running containers still use.
    Rm {
        #[arg(required = true, value_name = "REF")]
        references: Vec<String>,
    },
    /// Write a busybox:latest image archive made from the host's /bin/busybox
    /// (Debian's busybox-static), for trying outpost offline. FILE ending in .gz is gzipped.
    BuildBusybox {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Write the `docker save` format instead of an OCI archive.
        #[arg(long)]
        docker: bool,
    },
}

pub fn run(args: &ImageArgs) -> ExitCode {
    if let ImageCommand::BuildBusybox { file, docker } = &args.command {
        let format = if *docker { ArchiveFormat::Docker } else { ArchiveFormat::Oci };
        return match busybox::build_archive(file, format) {
            Ok(_) => {
                println!("Wrote {} ({})", file.display(), busybox::REFERENCE);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    let store = match ImageStore::open(store_dir(&args.state)) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let ImageCommand::Pull { reference, auth_file, insecure_registry, ca_file, timeout } =
        &args.command
    {
        let mut options = PullOptions::for_state(&args.state);
        if !auth_file.is_empty() {
            options.auth_files = auth_file.clone();
        }
        options.insecure_registries = insecure_registry.clone();
        options.ca_files = ca_file.clone();
        options.timeout = Duration::from_secs(*timeout);
        let store = Arc::new(store);
        return match smol::block_on(pull::pull(&store, reference, &options)) {
            Ok(image) => {
                println!("Pulled image: {} ({})", image.reference, image.digest);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    let mut ok = true;
    match &args.command {
        ImageCommand::Import { files } => {
            for file in files {
                match store.import(file) {
                    Ok(refs) => refs.iter().for_each(|r| println!("Loaded image: {r}")),
                    Err(e) => {
                        // Layer errors name the layer; say which file it came from.
                        let msg = e.to_string();
                        if msg.contains(&file.display().to_string()) {
                            eprintln!("error: {msg}");
                        } else {
                            eprintln!("error: {}: {msg}", file.display());
                        }
                        ok = false;
                    }
                }
            }
        }
        ImageCommand::Ls => match store.list() {
            Ok(images) => print!("{}", ls_table(&images)),
            Err(e) => return fail(&e),
        },
        ImageCommand::Rm { references } => {
            for r in references {
                match store.remove(r) {
                    Ok(removed) => removed.iter().for_each(|r| println!("Untagged: {r}")),
                    Err(e) => {
                        eprintln!("error: {e}");
                        ok = false;
                    }
                }
            }
        }
        ImageCommand::BuildBusybox { .. } | ImageCommand::Pull { .. } => {}
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::FAILURE
}

/// `docker images` layout: one row per name, `<none>` for an image without one.
pub fn ls_table(images: &[super::ImageSummary]) -> String {
    let mut rows = vec![["REPOSITORY".to_string(), "TAG".into(), "IMAGE ID".into(), "SIZE".into()]];
    for image in images {
        let id = image
            .id
            .strip_prefix("sha256:")
            .unwrap_or(&image.id)
            .chars()
            .take(12)
            .collect::<String>();
        let size = human_size(image.size);
        if image.references.is_empty() {
            rows.push(["<none>".into(), "<none>".into(), id.clone(), size.clone()]);
        }
        for r in &image.references {
            let (repo, tag) = display_parts(r);
            rows.push([repo, tag, id.clone(), size.clone()]);
        }
    }
    let widths: Vec<usize> =
        (0..4).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> =
            row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Decimal units with four significant digits, as docker and crictl print sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 100.0 {
        1
    } else if value >= 10.0 {
        2
    } else {
        3
    };
    let mut s = format!("{value:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(4_261_000), "4.261MB");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }
}
