//! A Redis connection that sends a command a second time when the first found the connection
//! broken. [`ConnectionManager`] reconnects by itself after a Redis restart, but the first
//! command on the dead connection still fails ("broken pipe"); without this, the first client to
//! join after a restart would be refused. A command that failed that way never reached Redis,
//! so sending it again does not repeat it.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Pause before the second attempt, so the manager's reconnect can complete.
const PAUSE: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct Retrying(pub ConnectionManager);

fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl ConnectionLike for Retrying {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.0.req_packed_command(cmd).await {
                Err(e) if broken(&e) => {
                    tokio::time::sleep(PAUSE).await;
                    self.0.req_packed_command(cmd).await
                }
                r => r,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.0.req_packed_commands(pipeline, offset, count).await {
                Err(e) if broken(&e) => {
                    tokio::time::sleep(PAUSE).await;
                    self.0.req_packed_commands(pipeline, offset, count).await
                }
                r => r,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}
