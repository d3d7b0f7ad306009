//! The stored-response routes: `GET` and `DELETE /v1/responses/{id}`, and
//! `GET /v1/responses/{id}/input_items`, in OpenAI's shapes. Every read is
//! scoped to the caller's key: another key's response is a 404, exactly as
//! one that never existed.

use http::{Method, Response, StatusCode};
use serde_json::{json, Value};

use super::store_error;
use crate::api::error::ApiError;
use crate::api::{json_response, ApiBody, ApiState, Client};

const PREFIX: &str = "/v1/responses/";

/// Serves a `/v1/responses/{id}[/input_items]` request.
pub async fn handle(
    state: &ApiState,
    client: &Client,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Result<Response<ApiBody>, ApiError> {
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let (id, input_items) = match rest.split_once('/') {
        Some((id, "input_items")) => (id, true),
        Some(_) => return Err(unknown(method, path)),
        None => (rest, false),
    };
    if id.is_empty() {
        return Err(unknown(method, path));
    }
    let Some(store) = &state.responses else {
        return Err(not_found(id));
    };
    match (method, input_items) {
        (&Method::GET, false) => match store.get(&client.owner, id).await {
            Ok(Some(r)) => Ok(json_response(StatusCode::OK, &r.response)),
            Ok(None) => Err(not_found(id)),
            Err(e) => Err(store_error(e)),
        },
        (&Method::DELETE, false) => match store.delete(&client.owner, id).await {
            Ok(true) => {
                state.threads.forget(id);
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"id": id, "object": "response.deleted", "deleted": true}),
                ))
            }
            Ok(false) => Err(not_found(id)),
            Err(e) => Err(store_error(e)),
        },
        (&Method::GET, true) => {
            let page = Page::parse(query)?;
            match store.get(&client.owner, id).await {
                Ok(Some(r)) => Ok(json_response(
                    StatusCode::OK,
                    &page.list(r.input_items.as_array().map(Vec::as_slice).unwrap_or(&[]))?,
                )),
                Ok(None) => Err(not_found(id)),
                Err(e) => Err(store_error(e)),
            }
        }
        (_, false) => Err(ApiError::method_not_allowed("GET, DELETE")),
        (_, true) => Err(ApiError::method_not_allowed("GET")),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("Response with id '{id}' not found."))
}

fn unknown(method: &Method, path: &str) -> ApiError {
    ApiError::not_found(format!("Unknown request URL: {method} {path}."))
}

/// `limit`, `order` and `after` of a list request (OpenAI's defaults:
/// 20, newest first).
struct Page {
    limit: usize,
    ascending: bool,
    after: Option<String>,
}

impl Page {
    fn parse(query: Option<&str>) -> Result<Page, ApiError> {
        let mut page = Page {
            limit: 20,
            ascending: false,
            after: None,
        };
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "limit" => {
                    page.limit = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            ApiError::invalid("limit", "`limit` must be between 1 and 100")
                        })?
                }
                "order" => {
                    page.ascending = match v {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(ApiError::invalid(
                                "order",
                                "`order` must be `asc` or `desc`",
                            ))
                        }
                    }
                }
                "after" => page.after = Some(v.to_owned()),
                // `include[]` and the like: nothing to include beyond what is kept.
                _ => {}
            }
        }
        Ok(page)
    }

    fn list(&self, items: &[Value]) -> Result<Value, ApiError> {
        let mut ordered: Vec<&Value> = items.iter().collect();
        if !self.ascending {
            ordered.reverse();
        }
        let start = match &self.after {
            None => 0,
            Some(after) => {
                ordered
                    .iter()
                    .position(|i| i["id"].as_str() == Some(after.as_str()))
                    .ok_or_else(|| {
                        ApiError::invalid("after", format!("No input item with id '{after}'."))
                    })?
                    + 1
            }
        };
        let data: Vec<Value> = ordered
            .iter()
            .skip(start)
            .take(self.limit)
            .map(|v| (*v).clone())
            .collect();
        let has_more = ordered.len() > start + data.len();
        Ok(json!({
            "object": "list",
            "data": data,
            "first_id": data.first().map(|i| i["id"].clone()),
            "last_id": data.last().map(|i| i["id"].clone()),
            "has_more": has_more,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({"id": format!("msg_{i}")})).collect()
    }

    #[test]
    fn input_items_list_newest_first_by_default_and_pages_with_after() {
        let page = Page::parse(Some("limit=2")).unwrap();
        let list = page.list(&items(3)).unwrap();
        assert_eq!(list["first_id"], "msg_2");
        assert_eq!(list["last_id"], "msg_1");
        assert_eq!(list["has_more"], true);
        let next = Page::parse(Some("limit=2&after=msg_1")).unwrap();
        let list = next.list(&items(3)).unwrap();
        assert_eq!(list["data"].as_array().unwrap().len(), 1);
        assert_eq!(list["has_more"], false);
        let asc = Page::parse(Some("order=asc"))
            .unwrap()
            .list(&items(3))
            .unwrap();
        assert_eq!(asc["first_id"], "msg_0");
    }

    #[test]
    fn bad_paging_parameters_are_400s_naming_them() {
        for (q, param) in [
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("order=up", "order"),
        ] {
            let e = Page::parse(Some(q)).err().expect(q);
            assert_eq!(e.param.as_deref(), Some(param));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
        }
    }
}
