//! rtnetlink plumbing shared by bridge and TAP code: a current-thread runtime
//! per call and by-name link operations.

use std::future::Future;

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use super::NetError;

/// Runs `f` with a fresh rtnetlink handle on a current-thread runtime.
///
/// The socket is opened on the calling thread, so it acts on that thread's
/// network namespace.
pub(super) fn run<T, F, Fut>(f: F) -> Result<T, NetError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, NetError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(NetError::Runtime)?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(NetError::NetlinkSocket)?;
        let driver = tokio::spawn(connection);
        let result = f(handle).await;
        driver.abort();
        result
    })
}

/// The positive errno carried by a netlink error reply, if any.
pub(super) fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|code| -code.get()),
        _ => None,
    }
}

/// Success, or `EEXIST`: what `op` adds to `name` is there already (a
/// concurrent caller added it).
pub(super) fn done_or_exists(
    result: Result<(), rtnetlink::Error>,
    op: &'static str,
    name: &str,
) -> Result<(), NetError> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(libc::EEXIST) => Ok(()),
        Err(err) => Err(failed(op, name, err)),
    }
}

fn failed(op: &'static str, name: &str, source: rtnetlink::Error) -> NetError {
    NetError::Netlink {
        op,
        name: name.to_string(),
        source,
    }
}

/// The link called `name`, or `None` when there is none.
pub(super) async fn link_by_name(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, NetError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(failed("look up interface", name, err)),
    }
}

/// The names of every link in this network namespace.
pub(super) async fn link_names(handle: &Handle) -> Result<Vec<String>, NetError> {
    let mut links = handle.link().get().execute();
    let mut names = Vec::new();
    while let Some(link) = links
        .try_next()
        .await
        .map_err(|err| failed("list", "interfaces", err))?
    {
        names.extend(link_name(&link));
    }
    Ok(names)
}

/// Every link in this network namespace.
pub(super) async fn links(handle: &Handle) -> Result<Vec<LinkMessage>, NetError> {
    let mut links = handle.link().get().execute();
    let mut all = Vec::new();
    while let Some(link) = links
        .try_next()
        .await
        .map_err(|err| failed("list", "interfaces", err))?
    {
        all.push(link);
    }
    Ok(all)
}

/// The link's alias (`ip link set … alias`), if it has one.
pub(super) fn alias(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::IfAlias(alias) => Some(alias.clone()),
        _ => None,
    })
}

/// Sets the alias of the link called `name`.
pub(super) async fn set_alias(handle: &Handle, name: &str, alias: &str) -> Result<(), NetError> {
    let mut message = LinkUnspec::new_with_name(name).build();
    message
        .attributes
        .push(LinkAttribute::IfAlias(alias.to_owned()));
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|err| failed("mark the owner of", name, err))
}

pub(super) fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The index of the bridge (controller) `link` is attached to, if any.
pub(super) fn controller_index(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

/// The link with `index`, or `None` when there is none.
pub(super) async fn link_by_index(
    handle: &Handle,
    index: u32,
) -> Result<Option<LinkMessage>, NetError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(failed("look up interface", &index.to_string(), err)),
    }
}

pub(super) fn is_bridge(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => infos
            .iter()
            .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Bridge))),
        _ => false,
    })
}

/// Sets the link called `name` up or down, addressing it by name so that a
/// link renamed meanwhile is left alone. `Ok(false)` when no such link exists.
pub(super) async fn set_up(handle: &Handle, name: &str, up: bool) -> Result<bool, NetError> {
    let builder = LinkUnspec::new_with_name(name);
    let message = if up { builder.up() } else { builder.down() }.build();
    match handle.link().set(message).execute().await {
        Ok(()) => Ok(true),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(false),
        Err(err) => Err(failed(
            if up { "bring up" } else { "bring down" },
            name,
            err,
        )),
    }
}

/// Attaches the link called `name` to the bridge with index `bridge_index`.
pub(super) async fn set_controller(
    handle: &Handle,
    name: &str,
    bridge_index: u32,
) -> Result<(), NetError> {
    let message = LinkUnspec::new_with_name(name)
        .controller(bridge_index)
        .build();
    match handle.link().set(message).execute().await {
        Ok(()) => Ok(()),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Err(NetError::LinkNotFound {
            name: name.to_string(),
        }),
        Err(err) => Err(failed("attach to its bridge", name, err)),
    }
}

/// Deletes the link called `name`; `Ok(false)` when it was already gone.
pub(super) async fn delete_by_name(handle: &Handle, name: &str) -> Result<bool, NetError> {
    let message = LinkUnspec::new_with_name(name).build();
    match handle.link().del_with_message(message).execute().await {
        Ok(()) => Ok(true),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(false),
        Err(err) => Err(failed("delete interface", name, err)),
    }
}
