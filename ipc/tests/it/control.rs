//! Control messages between processes over nng `ipc://`.

use chronos_ipc::control::{AckStatus, ControlError, ControlMessage, ControlReceiver};

use crate::{finish, peer};

async fn next(rx: &mut ControlReceiver) -> Result<ControlMessage, ControlError> {
    let watchdog = std::time::Duration::from_secs(60);
    tokio::time::timeout(watchdog, rx.recv()).await.expect("watchdog: no message in 60 s")
}

#[test]
fn typed_messages_cross_processes_and_a_bad_one_is_refused_not_fatal() {
    let path = std::env::temp_dir().join(format!("chronos-control-{}.ipc", std::process::id()));
    let url = format!("ipc://{}", path.display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut rx = ControlReceiver::listen(&url).await.unwrap();
        let sender = peer(&["control-send", &url, "100"]);
        match next(&mut rx).await.unwrap() {
            ControlMessage::Register { role, instance: 1, .. } => assert_eq!(role, "peer"),
            m => panic!("expected a registration, got {m:?}"),
        }
        for id in 0..100u64 {
            let m = next(&mut rx).await.unwrap();
            assert_eq!(m, ControlMessage::Ack { id, status: AckStatus::Committed, body: id.to_le_bytes().to_vec() });
        }
        match next(&mut rx).await {
            Err(ControlError::Decode(e)) => assert!(e.reason.contains("truncated"), "{e}"),
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert_eq!(next(&mut rx).await.unwrap(), ControlMessage::Shutdown { reason: "done".into() });
        let (code, _) = finish(sender);
        assert_eq!(code, 0);
    });
    let _ = std::fs::remove_file(path);
}
