//! moto's S3 server (the Python venv's `moto[server]`) as a child process: the object storage
//! the recording mover writes to, on a loopback port of the test's namespace.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http;

pub struct S3 {
    child: Child,
    pub port: u16,
}

impl S3 {
    /// Starts moto on 127.0.0.1:`port` and waits until it answers.
    pub fn start(port: u16) -> S3 {
        let child = Command::new(crate::python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto (scripts/test.sh installs it in the venv)");
        let s3 = S3 { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http::request(port, "GET", "/", &[], "").is_err() {
            assert!(Instant::now() < deadline, "moto did not answer in 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        s3
    }

    pub fn create_bucket(&self, bucket: &str) {
        let r =
            http::request(self.port, "PUT", &format!("/{bucket}"), &[], "").expect("create bucket");
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// Downloads `key` of `bucket` to `to` (a signed GET through boto3, which moto needs
    /// for objects).
    pub fn download(&self, bucket: &str, key: &str, to: &std::path::Path) {
        let script = "import sys, boto3\n\
            s3 = boto3.client('s3', endpoint_url=sys.argv[1], aws_access_key_id='test', \
            aws_secret_access_key='test', region_name='us-east-1')\n\
            s3.download_file(sys.argv[2], sys.argv[3], sys.argv[4])\n";
        let out = Command::new(crate::python())
            .args(["-c", script])
            .arg(format!("http://127.0.0.1:{}", self.port))
            .args([bucket, key])
            .arg(to)
            .output()
            .expect("run boto3");
        assert!(
            out.status.success(),
            "download {bucket}/{key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The bucket's objects: (key, size), from a ListObjectsV2 answer.
    pub fn list(&self, bucket: &str) -> Vec<(String, u64)> {
        let path = format!("/{bucket}?list-type=2&max-keys=1000");
        let r = http::request(self.port, "GET", &path, &[], "").expect("list bucket");
        assert_eq!(r.status, 200, "{}", r.body);
        let between = |s: &str, open: &str, close: &str| -> Option<String> {
            let start = s.find(open)? + open.len();
            let end = s[start..].find(close)? + start;
            Some(s[start..end].to_string())
        };
        r.body
            .split("<Contents>")
            .skip(1)
            .filter_map(|c| {
                let key = between(c, "<Key>", "</Key>")?;
                let size = between(c, "<Size>", "</Size>")?.parse().ok()?;
                Some((key, size))
            })
            .collect()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
