//! Bad input over the wire: each request gets its precise status code and message, and
//! training goes on.

use anyk_core::Layout;
use anyk_proto::v1::{DataType, GradientRequest, InitializeRequest, Tensor};
use tonic::Code;

use crate::{PARAMS, grad, layout, ready, req, start, tensor};

/// A bad request and what the client must be told.
struct Case {
    name: &'static str,
    request: GradientRequest,
    code: Code,
    text: &'static str,
}

fn case(name: &'static str, request: GradientRequest, code: Code, text: &'static str) -> Case {
    Case {
        name,
        request,
        code,
        text,
    }
}

/// Requests wrong in who sent them, for which step and epoch, or which blocks they name.
fn envelope_cases(layout: &Layout) -> Vec<Case> {
    let holder = layout.holders[0][0];
    let stranger = (0..4).find(|w| !layout.holders[0].contains(w)).unwrap();
    let ok = || tensor(&grad(0));
    vec![
        case(
            "unknown worker",
            req(17, 0, 1, 0, ok()),
            Code::NotFound,
            "unknown worker 17",
        ),
        case(
            "block not held",
            req(stranger, 0, 1, 0, ok()),
            Code::PermissionDenied,
            "does not hold block 0",
        ),
        case(
            "block out of range",
            req(holder, 0, 1, 99, ok()),
            Code::PermissionDenied,
            "block 99",
        ),
        case(
            "future step",
            req(holder, 5, 1, 0, ok()),
            Code::OutOfRange,
            "step 5 is not current",
        ),
        case(
            "stale epoch",
            req(holder, 0, 0, 0, ok()),
            Code::FailedPrecondition,
            "stale layout epoch 0",
        ),
        case(
            "no blocks",
            GradientRequest {
                blocks: vec![],
                ..req(holder, 0, 1, 0, ok())
            },
            Code::InvalidArgument,
            "names no block",
        ),
    ]
}

/// Requests whose gradient tensor is wrong.
fn tensor_cases(layout: &Layout) -> Vec<Case> {
    let holder = layout.holders[0][0];
    let with = |gradient: Tensor| req(holder, 0, 1, 0, gradient);
    let mut nan = grad(0);
    nan[2] = f32::NAN;
    let mut inf = grad(0);
    inf[4] = f32::INFINITY;
    let ragged = Tensor {
        dtype: DataType::F32 as i32,
        length: 5,
        data: vec![0u8; 7].into(),
    };
    let f64_tensor = Tensor {
        dtype: DataType::F64 as i32,
        ..tensor(&grad(0))
    };
    let missing = GradientRequest {
        gradient: None,
        ..with(tensor(&grad(0)))
    };
    vec![
        case(
            "wrong shape",
            with(tensor(&[1.0, 2.0])),
            Code::InvalidArgument,
            "wrong shape: 2 values",
        ),
        case(
            "ragged bytes",
            with(ragged),
            Code::InvalidArgument,
            "carries 7 bytes",
        ),
        case(
            "wrong dtype",
            with(f64_tensor),
            Code::InvalidArgument,
            "unsupported dtype",
        ),
        case(
            "NaN",
            with(tensor(&nan)),
            Code::InvalidArgument,
            "index 2 is not finite (NaN)",
        ),
        case(
            "Inf",
            with(tensor(&inf)),
            Code::InvalidArgument,
            "index 4 is not finite (inf)",
        ),
        case(
            "missing tensor",
            missing,
            Code::InvalidArgument,
            "tensor is missing",
        ),
    ]
}

/// Each bad request gets its precise status, and a full step still completes after it.
#[tokio::test]
async fn bad_input_gets_a_precise_status_and_training_continues() {
    let layout = layout();
    let mut s = ready(&layout).await;
    let cases = envelope_cases(&layout).into_iter().chain(tensor_cases(&layout));
    for Case {
        name,
        request,
        code,
        text,
    } in cases
    {
        let status = s.training.push_gradient(request).await.expect_err(name);
        assert_eq!(status.code(), code, "{name}: {status:?}");
        assert!(
            status.message().contains(text),
            "{name}: {:?} lacks {text:?}",
            status.message()
        );
        // Nothing was stored: the step completes only with every block pushed again.
        s.complete_step(&layout).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn oversize_messages_are_refused_and_the_server_keeps_serving() {
    let layout = layout();
    let mut s = start(None, 4096).await;
    s.set_layout(&layout).await.unwrap();
    // Before the model exists only the transport's static limit applies.
    let huge = InitializeRequest {
        worker: 0,
        params: Some(tensor(&[0.5f32; 10_000])),
    };
    let status = s.training.initialize(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{}", status.message());
    s.init(&[0.0; PARAMS]).await;
    s.complete_step(&layout).await;
    s.stop().await;
}

#[tokio::test]
async fn once_initialized_a_message_may_carry_no_more_than_the_model() {
    let layout = layout();
    let mut s = start(None, 1 << 20).await;
    s.set_layout(&layout).await.unwrap();
    s.init(&[0.0; PARAMS]).await;
    // Far under the static 1 MiB, far over 5 parameters plus a header.
    let status = s
        .push(layout.holders[0][0], 0, 1, 0, &[0.5f32; 4096])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("larger than this job allows"),
        "{}",
        status.message()
    );
    // Within the limit, a wrong length is still refused by the exact check.
    let status = s
        .push(layout.holders[0][0], 0, 1, 0, &[0.5f32; PARAMS + 1])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    s.complete_step(&layout).await;
    s.stop().await;
}
