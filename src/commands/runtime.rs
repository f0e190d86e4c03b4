//! The async runtime a command's future runs on.

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the async runtime starts")
}

/// Runs a command's future to its end. A prompt still waiting on the terminal (a second Ctrl-C
/// stops the command while a confirmation is asked) must not keep the process alive, so the
/// runtime does not wait for it.
pub(super) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let runtime = runtime();
    let output = runtime.block_on(future);
    runtime.shutdown_background();
    output
}
