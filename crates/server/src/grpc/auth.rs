//! `etcdserverpb.Auth`: every RPC goes through raft, checked at apply time as etcd
//! checks it. Passwords are hashed here, before proposing, so that a plain password
//! never reaches the raft log; Authenticate checks the password here too, off the
//! apply path.

use cairn_api::etcdserverpb::auth_server::Auth;
use cairn_api::etcdserverpb::*;
use tonic::{Request, Response, Status};

use super::{Credentials, Service};
use crate::apply::Applied;
use crate::auth::{self, AuthApplied};
use crate::error::Error;

/// How often Authenticate starts over when the auth store changes under it.
const AUTHENTICATE_ATTEMPTS: usize = 8;

impl Service {
    /// Proposes the auth request `wrap` makes of `request` and answers with what
    /// `respond` makes of its result and a header; a result `respond` gives back is
    /// an internal error.
    async fn auth_call<M, R>(
        &self,
        request: Request<M>,
        wrap: impl FnOnce(M) -> InternalRaftRequest,
        respond: impl FnOnce(AuthApplied, Option<ResponseHeader>) -> Result<R, AuthApplied>,
    ) -> Result<Response<R>, Status> {
        let credentials = self.credentials(&request).await?;
        let Applied::Auth(applied) = self.write(wrap(request.into_inner()), &credentials).await? else {
            return Err(super::unexpected("Auth"));
        };
        let unexpected = |other| Status::internal(format!("etcdserver: unexpected auth result {other:?}"));
        respond(applied, self.header().await).map(Response::new).map_err(unexpected)
    }

    /// A response header at the current store revision.
    async fn header(&self) -> Option<ResponseHeader> {
        let revision = self.read(false, |_, _, revisions| Ok(revisions.current)).await.unwrap_or_default();
        let mut header = Some(ResponseHeader { revision: revision as i64, ..ResponseHeader::default() });
        self.fill(&mut header);
        header
    }

    /// Hashes `password` with the configured bcrypt cost, off the async threads.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.config.bcrypt_cost;
        tokio::task::spawn_blocking(move || cairn_auth::hash_password(&password, cost))
            .await
            .map_err(|error| Status::internal(error.to_string()))?
            .map_err(|error| Error::from(error).into())
    }
}

#[tonic::async_trait]
impl Auth for Service {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_enable: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthEnableResponse { header })).await
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_disable: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthDisableResponse { header })).await
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_user_delete: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthUserDeleteResponse { header })).await
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_user_grant_role: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthUserGrantRoleResponse { header })).await
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_user_revoke_role: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthUserRevokeRoleResponse { header })).await
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_role_add: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthRoleAddResponse { header })).await
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_role_delete: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthRoleDeleteResponse { header })).await
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_role_grant_permission: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthRoleGrantPermissionResponse { header })).await
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_role_revoke_permission: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthRoleRevokePermissionResponse { header })).await
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_status: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |applied, header| match applied {
            AuthApplied::Status { enabled, revision } => {
                Ok(AuthStatusResponse { header, enabled, auth_revision: revision })
            }
            other => Err(other),
        })
        .await
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let request = request.into_inner();
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            // Check the password outside the apply loop, against the store as it is now.
            let check = auth::read(&self.auth).password_check(&request.name).map_err(Error::from)?;
            let password = request.password.clone();
            let checked_revision = tokio::task::spawn_blocking(move || check.verify(&password))
                .await
                .map_err(|error| Status::internal(error.to_string()))?
                .map_err(Error::from)?;
            // Propose the issuance without the password and without the caller's token.
            let prefix = auth::read(&self.auth).tokens().token_prefix();
            let issue = InternalAuthenticateRequest {
                name: request.name.clone(),
                password: String::new(),
                simple_token: prefix,
            };
            let none = Credentials { pairs: Vec::new() };
            let applied = self
                .write(InternalRaftRequest { authenticate: Some(issue), ..Default::default() }, &none)
                .await?;
            let Applied::Auth(AuthApplied::Token(token)) = applied else {
                return Err(super::unexpected("Auth(Token)"));
            };
            // A change to the auth store since the check may have changed the password.
            if auth::read(&self.auth).revision() == checked_revision {
                return Ok(Response::new(AuthenticateResponse { header: self.header().await, token }));
            }
        }
        Err(Status::unavailable("etcdserver: the auth store kept changing during authentication"))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let (metadata, extensions, mut inner) = request.into_parts();
        let no_password = inner.options.as_ref().is_some_and(|options| options.no_password);
        let password = std::mem::take(&mut inner.password);
        if !no_password {
            inner.hashed_password = self.hash(password).await?;
        }
        let request = Request::from_parts(metadata, extensions, inner);
        let wrap = |r| InternalRaftRequest { auth_user_add: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthUserAddResponse { header })).await
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let (metadata, extensions, mut inner) = request.into_parts();
        let password = std::mem::take(&mut inner.password);
        inner.hashed_password = self.hash(password).await?;
        let request = Request::from_parts(metadata, extensions, inner);
        let wrap = |r| InternalRaftRequest { auth_user_change_password: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |_, header| Ok(AuthUserChangePasswordResponse { header })).await
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_user_get: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |applied, header| match applied {
            AuthApplied::Roles(roles) => Ok(AuthUserGetResponse { header, roles }),
            other => Err(other),
        })
        .await
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_user_list: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |applied, header| match applied {
            AuthApplied::Names(users) => Ok(AuthUserListResponse { header, users }),
            other => Err(other),
        })
        .await
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_role_get: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |applied, header| match applied {
            AuthApplied::Permissions(perm) => Ok(AuthRoleGetResponse { header, perm }),
            other => Err(other),
        })
        .await
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let wrap = |r| InternalRaftRequest { auth_role_list: Some(r), ..Default::default() };
        self.auth_call(request, wrap, |applied, header| match applied {
            AuthApplied::Names(roles) => Ok(AuthRoleListResponse { header, roles }),
            other => Err(other),
        })
        .await
    }
}
