//! The process arguments: the pod's `command`/`args` (with `$(VAR)` expansion, kubelet
//! `ExpandContainerCommandAndArgs`) over the image's `Entrypoint`/`Cmd` (containerd
//! `WithProcessArgs`).

use k8s_openapi::api::core::v1::Container;
use oci_spec::image::Config as ImageConfig;

use super::env::EnvList;
use super::expand::expand;
use super::SpecError;

/// - neither command nor args: Entrypoint + Cmd;
/// - command only: command (the image's Cmd is ignored);
/// - args only: Entrypoint + args;
/// - both: command + args.
///
/// An image Entrypoint of exactly `[""]` counts as none (containerd). An empty result is
/// `SpecError::NoCommand` ("no command specified").
pub fn process_args(
    container: &Container,
    image: &ImageConfig,
    env: &EnvList,
) -> Result<Vec<String>, SpecError> {
    let mapping = |n: &str| env.get(n).map(str::to_string);
    let command: Vec<String> =
        container.command.iter().flatten().map(|c| expand(c, mapping)).collect();
    let mut args: Vec<String> =
        container.args.iter().flatten().map(|a| expand(a, mapping)).collect();
    let mut argv = command;
    if argv.is_empty() {
        if args.is_empty() {
            args = image.cmd().clone().unwrap_or_default();
        }
        let entrypoint = image.entrypoint().clone().unwrap_or_default();
        if !(entrypoint.len() == 1 && entrypoint[0].is_empty()) {
            argv = entrypoint;
        }
    }
    argv.extend(args);
    if argv.is_empty() {
        return Err(SpecError::NoCommand { container: container.name.clone() });
    }
    Ok(argv)
}
