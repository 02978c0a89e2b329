"""Training: one engine for every model in params.yaml `models:`.

Modules (import what you need; nothing heavy is imported here):
- config      resolve_model_config(all_params, model_name) -> ModelConfig: seed settings + profile, every default
- tasks       the task registry (multiclass, binary, oneclass): target, losses, correct count, scores, labels
- data        select_samples(...) and the uint8 tensor cache / batch loader
- transforms  preprocess(images, ...) for inference, batched tensor augmentation for training
- models      build_model(config): the architecture registry
- weights     pretrained weights: torchvision API, a local file, or the offline MobileNetV2 file
- losses      build_loss(config): cross entropy, BCE, focal, MSE
- engine      train_one_epoch / evaluate / fit (checkpoint, resume, early stopping)
- artifact    save_model / load_model (data/models/<model>/model.pt)
- predict     predict_proba / predict_labels(model, meta, batch), through the task registry
- run         train_model(model_name, all_params, tracker=...): what `stages/train.py <model>` does
"""
