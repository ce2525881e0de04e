//! The user a container runs as: `runAsUser`/`runAsGroup` (container over pod), else the
//! image's `User`; names are resolved against the container's own `/etc/passwd` and
//! `/etc/group` once the rootfs exists (the runtime reads them and calls [`UserRequest::resolve`]).

use k8s_openapi::api::core::v1::{Container, Pod};
use oci_spec::runtime::User;

use super::SpecError;

/// A user or group, by number or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Id {
    Num(u32),
    Name(String),
}

impl Id {
    fn parse(s: &str) -> Id {
        s.parse().map(Id::Num).unwrap_or_else(|_| Id::Name(s.to_string()))
    }
}

/// Who the process runs as, before `/etc/passwd` is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRequest {
    pub user: Id,
    /// None: the user's primary group from `/etc/passwd` (0 if the uid has no entry).
    pub group: Option<Id>,
    /// `fsGroup` then `supplementalGroups`, as the kubelet passes them.
    pub supplemental_groups: Vec<u32>,
    /// Also add the groups `/etc/group` lists the user in (`supplementalGroupsPolicy: Merge`,
    /// the default; `Strict` turns it off).
    pub merge_image_groups: bool,
}

/// The resolved user and its home directory (for `HOME` when the environment has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    pub user: User,
    pub home: String,
}

impl UserRequest {
    /// From the pod, the container and the image's `User` (`uid`, `name`, `uid:gid`,
    /// `name:group`). `runAsGroup` without `runAsUser` keeps the image's user with that group
    /// (containerd refuses it; CRI-O does this, which is more useful on a device).
    pub fn new(pod: &Pod, container: &Container, image_user: Option<&str>) -> Self {
        let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let sc = container.security_context.as_ref();
        let uid = sc.and_then(|s| s.run_as_user).or(pod_sc.and_then(|s| s.run_as_user));
        let gid = sc.and_then(|s| s.run_as_group).or(pod_sc.and_then(|s| s.run_as_group));
        let (mut user, mut group) = match uid {
            Some(uid) => (Id::Num(uid as u32), None),
            None => match image_user.filter(|u| !u.is_empty()) {
                None => (Id::Num(0), None),
                Some(u) => match u.split_once(':') {
                    Some((u, g)) => (Id::parse(u), Some(Id::parse(g))),
                    None => (Id::parse(u), None),
                },
            },
        };
        if let Some(gid) = gid {
            group = Some(Id::Num(gid as u32));
        }
        if user == Id::Name(String::new()) {
            user = Id::Num(0);
        }
        let mut supplemental_groups = Vec::new();
        if let Some(fs_group) = pod_sc.and_then(|s| s.fs_group) {
            supplemental_groups.push(fs_group as u32);
        }
        supplemental_groups.extend(
            pod_sc
                .and_then(|s| s.supplemental_groups.as_ref())
                .into_iter()
                .flatten()
                .map(|g| *g as u32),
        );
        let strict = pod_sc.and_then(|s| s.supplemental_groups_policy.as_deref()) == Some("Strict");
        UserRequest { user, group, supplemental_groups, merge_image_groups: !strict }
    }

    /// The numeric user if no file needs reading (numeric uid and gid, no image groups wanted).
    pub fn numeric(&self) -> Option<User> {
        match (&self.user, &self.group, self.merge_image_groups) {
            (Id::Num(uid), Some(Id::Num(gid)), false) => {
                Some(build_user(*uid, *gid, &self.supplemental_groups))
            }
            _ => None,
        }
    }

    /// Resolves names and groups against the container's `/etc/passwd` and `/etc/group`
    /// contents (None when the image has no such file), like containerd's `WithUser` and
    /// `WithAdditionalGIDs`: the primary gid first, then the groups listing the user, then
    /// the pod's groups.
    pub fn resolve(
        &self,
        passwd: Option<&str>,
        group: Option<&str>,
    ) -> Result<ResolvedUser, SpecError> {
        let users: Vec<Passwd> = passwd.map(parse_passwd).unwrap_or_default();
        let entry = match &self.user {
            Id::Num(uid) => users.iter().find(|u| u.uid == *uid),
            Id::Name(name) => Some(
                users
                    .iter()
                    .find(|u| u.name == *name)
                    .ok_or_else(|| SpecError::UserNotFound { user: name.clone() })?,
            ),
        };
        let uid = match &self.user {
            Id::Num(uid) => *uid,
            Id::Name(_) => entry.map_or(0, |e| e.uid),
        };
        let groups: Vec<Group> = group.map(parse_group).unwrap_or_default();
        let gid = match &self.group {
            None => entry.map_or(0, |e| e.gid),
            Some(Id::Num(gid)) => *gid,
            Some(Id::Name(name)) => {
                groups
                    .iter()
                    .find(|g| g.name == *name)
                    .ok_or_else(|| SpecError::GroupNotFound { group: name.clone() })?
                    .gid
            }
        };
        let mut extra = Vec::new();
        if self.merge_image_groups {
            if let Some(e) = entry {
                for g in groups.iter().filter(|g| g.name != e.name && g.members.contains(&e.name)) {
                    extra.push(g.gid);
                }
            }
        }
        extra.extend(&self.supplemental_groups);
        let home = entry.map_or_else(|| "/".to_string(), |e| e.home.clone());
        Ok(ResolvedUser { user: build_user(uid, gid, &extra), home })
    }
}

fn build_user(uid: u32, gid: u32, extra: &[u32]) -> User {
    let mut gids = vec![gid];
    for g in extra {
        if !gids.contains(g) {
            gids.push(*g);
        }
    }
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids(Some(gids));
    user
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || line.starts_with('#') {
                return None;
            }
            Some(Passwd {
                name: f[0].to_string(),
                uid: f[2].trim().parse().ok()?,
                gid: f[3].trim().parse().ok()?,
                home: f.get(5).map_or("/", |h| if h.is_empty() { "/" } else { h }).to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 3 || line.starts_with('#') {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}
