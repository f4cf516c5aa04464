//! The one async runtime every object store call of the process runs on
//! (object_store and the signed Object Lock calls): the FUSE and CLI
//! threads block on it.

use std::sync::OnceLock;

/// One runtime for every cloud LSU of the process (two threads: the
/// requests wait on the network, not on the CPU).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kmsfs-s3")
            .enable_all()
            .build()
            .expect("the S3 runtime starts")
    })
}
