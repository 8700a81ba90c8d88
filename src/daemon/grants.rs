//! The grants task: an OAuth 2.0 grant that cannot be used (refused by
//! the provider, or not yet authorized) alerts the admins at once, with
//! the provider's words, and once more when it works again. One alert per
//! grant, however many mailboxes use it; the mailboxes' own alerts leave
//! a refused grant to this one.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::Shared;
use crate::oauth::GrantEvent;
use crate::shutdown::stopped;

pub(super) async fn grants_task(
    sh: Arc<Shared>,
    mut events: mpsc::UnboundedReceiver<GrantEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => alert(&sh, &e),
                None => return,
            },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

fn alert(sh: &Shared, e: &GrantEvent) {
    let zone = &sh.config.router.readers.zone;
    let (key, subject, body, high) = match e {
        GrantEvent::Broken {
            grant,
            used_by,
            token_url,
            since,
            error,
        } => {
            let users = used_by.join(", ");
            (
                format!("oauth2.{grant}.{}.down", since.as_second()),
                format!("mailtriage: no OAuth 2.0 token for {users}"),
                format!(
                    "mailtriage cannot get an OAuth 2.0 access token for {users} from {token_url} since {}.\n\n{error}\n\n{}Until then {users} cannot log in: mail there is not read, and mail to send waits in the outbox. You will get one more message when it works again.\n",
                    crate::text::local_time(*since, zone, *since),
                    if error.contains("invalid_client") {
                        "The client secret or certificate is wrong or has expired: renew it with the provider and in the credential the config names.\n\n"
                    } else if error.contains("invalid_grant") || error.contains("no refresh token")
                    {
                        "The consent was revoked, has expired, or was never given: give it again with `mailtriage oauth2 authorize --config DIR NAME` (NAME: the mailbox, or smtp).\n\n"
                    } else {
                        ""
                    }
                ),
                true,
            )
        }
        GrantEvent::Recovered {
            grant,
            used_by,
            token_url,
            since,
        } => {
            let users = used_by.join(", ");
            (
                format!("oauth2.{grant}.{}.up", since.as_second()),
                format!("mailtriage: OAuth 2.0 works again for {users}"),
                format!(
                    "mailtriage gets OAuth 2.0 access tokens for {users} from {token_url} again.\n"
                ),
                false,
            )
        }
    };
    sh.alert_admins(&key, &subject, body, high);
}
