//! placeholder
use std::path::PathBuf;

use async_tungstenite::WebSocketStream;

use super::io::UpgradedIo;

pub struct Plan {
    pub pod: String,
    pub uid: String,
    pub netns: Option<PathBuf>,
}

pub async fn run(_ws: WebSocketStream<UpgradedIo>, _plan: Plan) {}
