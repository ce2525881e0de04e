//! The binary as users and packagers meet it, without root: the command line, the API and its
//! clients (kubectl and `outpost get/describe/logs/events/top`) against an in-process server,
//! the systemd unit and the Debian package.

#[path = "../common/runner.rs"]
mod runner;

mod api_support;

mod api_http;
mod api_top;
mod api_watch;
mod cli;
mod deb_package;
mod systemd_unit;
