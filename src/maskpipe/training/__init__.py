"""Training: one engine for every model in params.yaml `models:`.

Modules (import what you need; nothing heavy is imported here):
- config      resolve_model_params(all_params, model_name): seed settings + profile overrides
- data        select_samples(...) and the uint8 tensor cache / batch loader
- transforms  preprocess(images, ...) for inference, batched tensor augmentation for training
- models      build_model(params): the architecture registry
- weights     pretrained weights: torchvision API, a local file, or the offline MobileNetV2 file
- losses      build_loss(params): cross entropy, BCE, focal, MSE
- engine      train_one_epoch / evaluate / fit (checkpoint, resume, early stopping)
- artifact    save_model / load_model (data/models/<model>/model.pt)
- predict     predict_proba(model, meta, batch)
- run         train_model(model_name, all_params): what `stages/train.py <model>` does
"""
